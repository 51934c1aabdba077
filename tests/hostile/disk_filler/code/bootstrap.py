# Hostile: fills the disk. Request: {"scratch": bytes, "persistent": bytes, "sync": bool,
# "pace_ms": n}. Writes 1 MiB chunks (fsync'd each when "sync", n ms apart) into files of at most 8 MiB in $TMPDIR and in
# WCP_WRITE_DIRS[0] until the target or an error; reports bytes written and the errno that
# stopped it.
import json, os, sys, time

CHUNK = b"\xa5" * (1 << 20)


SYNC = False
PACE = 0.0


def fill(where, target, prefix):
    written, n, errno = 0, 0, None
    try:
        while written < target:
            with open(os.path.join(where, f"{prefix}-{n}"), "wb") as f:
                for _ in range(8):
                    if written >= target:
                        break
                    f.write(CHUNK)
                    f.flush()
                    if SYNC:
                        os.fsync(f.fileno())
                    if PACE:
                        time.sleep(PACE)
                    written += len(CHUNK)
            n += 1
    except OSError as e:
        errno = e.errno
    return {"written": written, "errno": errno}


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
SYNC = bool(req.get("sync"))
PACE = req.get("pace_ms", 0) / 1000
out = {}
if req.get("scratch"):
    out["scratch"] = fill(os.environ["TMPDIR"], req["scratch"], "scratch")
dirs = [d for d in os.environ.get("WCP_WRITE_DIRS", "").split(":") if d]
if req.get("persistent") and dirs:
    out["persistent"] = fill(dirs[0], req["persistent"], "keep")
print(json.dumps(out))
