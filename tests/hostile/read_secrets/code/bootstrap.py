# Hostile: tries to read files outside its envelope. Request: {"paths": {label: path}}.
import json, sys


def attempt(path):
    try:
        with open(path, "rb") as f:
            return {"ok": True, "bytes": len(f.read())}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": type(e).__name__}


req = json.load(sys.stdin)
print(json.dumps({label: attempt(path) for label, path in req["paths"].items()}))
