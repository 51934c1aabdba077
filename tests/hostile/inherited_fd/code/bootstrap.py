# Hostile: uses a descriptor the Hall had open. Request: {"fd": n}.
import json, os, sys

req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
open_fds = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
try:
    data = os.pread(req["fd"], 100, 0)
    target = {"ok": True, "bytes": len(data)}
except OSError as e:
    target = {"ok": False, "errno": e.errno}
print(json.dumps({"open_fds": open_fds, "target": target}))
