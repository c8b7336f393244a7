"""Creates N MeshTimeouts through the REST API over one keep-alive connection."""
import http.client, json, os, sys

port, n = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
for i in range(1, n + 1):
    body = json.dumps({"type": "MeshTimeout", "mesh": "default", "name": f"mt-{i}",
                       "spec": {"targetRef": {"kind": "Mesh"},
                                "to": [{"targetRef": {"kind": "Mesh"}, "default": {"idleTimeout": "10s"}}]}})
    conn.request("PUT", f"/meshes/default/meshtimeouts/mt-{i}", body, {"Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    if r.status not in (200, 201):
        sys.exit(f"seed failed at mt-{i}: {r.status}")
