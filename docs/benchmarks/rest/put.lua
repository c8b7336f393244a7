-- wrk script: PUT (update) one of N existing MeshTimeouts, round robin.
local n = tonumber(os.getenv("BENCH_RESOURCES") or "1000")
local i = 0
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = (i % n) + 1
  local name = "mt-" .. i
  local body = '{"type":"MeshTimeout","mesh":"default","name":"' .. name ..
    '","spec":{"targetRef":{"kind":"Mesh"},"to":[{"targetRef":{"kind":"Mesh"},"default":{"idleTimeout":"' ..
    (i % 50 + 1) .. 's"}}]}}'
  return wrk.format(nil, "/meshes/default/meshtimeouts/" .. name, nil, body)
end
