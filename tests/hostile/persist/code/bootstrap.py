# Hostile: leaves traps in its persistent write directory for the Hall's next dispatch.
# Request: {"symlink": {"name": n, "to": path}?, "hardlink": {"name": n, "from": path}?,
#           "rename": {"from": path, "name": n}?}. Acts in WCP_WRITE_DIRS[0] and reports
# what each attempt got (ok, or the errno) plus what the directory now holds.
import json, os, sys


def attempt(fn):
    try:
        fn()
        return {"ok": True}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": type(e).__name__}


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
dirs = [d for d in os.environ.get("WCP_WRITE_DIRS", "").split(":") if d]
out = {"write_dirs": dirs}
if dirs:
    here = dirs[0]
    if "symlink" in req:
        s = req["symlink"]
        out["symlink"] = attempt(lambda: os.symlink(s["to"], os.path.join(here, s["name"])))
    if "hardlink" in req:
        h = req["hardlink"]
        out["hardlink"] = attempt(lambda: os.link(h["from"], os.path.join(here, h["name"])))
    if "rename" in req:
        r = req["rename"]
        out["rename"] = attempt(lambda: os.rename(r["from"], os.path.join(here, r["name"])))
    out["entries"] = sorted(os.listdir(here))
print(json.dumps(out))
