-- wrk script: PUT (update) one of N existing MeshTimeouts, round robin.
-- Each wrk thread starts at its own offset: with a shared start, both threads
-- would write the same key at the same moment and wait on each other's row
-- lock, which pgbench's random keys (the ceiling) do not.
local n = tonumber(os.getenv("BENCH_RESOURCES") or "1000")
local threads = 0
function setup(thread)
  thread:set("start", threads)
  threads = threads + 1
end
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
local i
request = function()
  if i == nil then
    i = (start or 0) * 499 % n
  end
  i = (i % n) + 1
  local name = "mt-" .. i
  local body = '{"type":"MeshTimeout","mesh":"default","name":"' .. name ..
    '","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"' ..
    (i % 50 + 1) .. 's"}}]}}'
  return wrk.format(nil, "/meshes/default/meshtimeouts/" .. name, nil, body)
end
