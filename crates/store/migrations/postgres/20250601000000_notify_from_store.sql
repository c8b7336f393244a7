-- The store announces changes itself, after commit, batched (see
-- crates/store/src/postgres/feed.rs): PostgreSQL serializes the commits of all
-- transactions that issued NOTIFY, so a per-row trigger capped every write at
-- the rate of one commit at a time.
DROP TRIGGER resources_notify ON resources;
DROP FUNCTION kuma_notify_resource_change();
