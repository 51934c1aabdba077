# Hostile: tries to read files outside its envelope. Request: {"paths": {label: path}}.
import json, sys


def attempt(path):
    try:
        with open(path, "rb") as f:
            return {"ok": True, "bytes": len(f.read())}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": type(e).__name__}


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
print(json.dumps({label: attempt(path) for label, path in req["paths"].items()}))
