-- Every resource of every kind in one table.
CREATE TABLE resources (
    kind              TEXT    NOT NULL,
    -- '' for global kinds
    mesh              TEXT    NOT NULL,
    name              TEXT    NOT NULL,
    version           INTEGER NOT NULL,
    -- JSON object of strings
    labels            TEXT    NOT NULL,
    -- JSON, kept as the client wrote it
    spec              TEXT    NOT NULL,
    status            TEXT,
    -- microseconds since the Unix epoch, UTC
    creation_time     INTEGER NOT NULL,
    modification_time INTEGER NOT NULL,
    -- lists by kind come out ordered by name, then mesh
    PRIMARY KEY (kind, name, mesh)
) WITHOUT ROWID;

-- lists inside a mesh, and deleting a mesh's contents
CREATE INDEX resources_by_mesh ON resources (mesh, kind, name);
