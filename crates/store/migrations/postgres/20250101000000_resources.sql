-- Every resource of every kind in one table. Text columns use the "C"
-- collation so that lists sort byte-wise, exactly as the other backends do.
CREATE TABLE resources (
    kind              text COLLATE "C" NOT NULL,
    -- '' for global kinds
    mesh              text COLLATE "C" NOT NULL,
    name              text COLLATE "C" NOT NULL,
    version           bigint           NOT NULL,
    labels            jsonb            NOT NULL DEFAULT '{}',
    -- json, not jsonb: clients get their keys back in the order they wrote them
    spec              json             NOT NULL,
    status            json,
    creation_time     timestamptz      NOT NULL,
    modification_time timestamptz      NOT NULL,
    -- lists by kind come out ordered by name, then mesh
    PRIMARY KEY (kind, name, mesh)
);

-- lists inside a mesh, and deleting a mesh's contents
CREATE INDEX resources_by_mesh ON resources (mesh, kind, name);

-- The change feed: every committed row change is announced to every control
-- plane LISTENing on kuma_resource_changes, in commit order.
CREATE FUNCTION kuma_notify_resource_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r  resources;
    op text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD; op := 'deleted';
    ELSIF TG_OP = 'INSERT' THEN
        r := NEW; op := 'created';
    ELSE
        r := NEW; op := 'updated';
    END IF;
    PERFORM pg_notify('kuma_resource_changes', json_build_object(
        'op', op, 'kind', r.kind, 'mesh', r.mesh, 'name', r.name, 'version', r.version)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER resources_notify
    AFTER INSERT OR UPDATE OR DELETE ON resources
    FOR EACH ROW EXECUTE FUNCTION kuma_notify_resource_change();
