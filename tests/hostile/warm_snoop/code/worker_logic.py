"""Hostile, for warm instances (tests/it/warm.rs). Protocol 2: the test copies the standard
workers/bootstrap.py beside this file.

Request: {"secret": "SECRET-<uuid>", "kill_all": bool}. The worker leaves its secret in every
place it can write, looks for any other request's secret everywhere it can read (the runs
directory, temporary directories, /proc of every process it can see), and with ``kill_all``
sends SIGKILL to every process it may signal: the idle instances beside it are its targets.
"""

import os
import re
import signal

WORKER_SPECIES = "wrk.hello.greeter"
SECRET = re.compile(r"SECRET-[0-9a-f-]{36}")
PLACES = ["/tmp", "/var/tmp", "/dev/shm", "/run"]


class BadRequest(Exception):
    code = "bad_request"


class WorkFailed(Exception):
    code = "work_failed"


def _leave(secret, ctx):
    left = []
    for d in [ctx.work_dir, os.environ.get("TMPDIR"), *PLACES, *ctx.write_dirs]:
        if not d:
            continue
        try:
            with open(os.path.join(d, "left-" + secret), "w") as f:
                f.write(secret)
            left.append(d)
        except OSError:
            pass
    return left


def _scan_text(path, found):
    try:
        with open(path, "rb") as f:
            found.update(SECRET.findall(f.read(1 << 16).decode("utf-8", "replace")))
    except OSError:
        pass


def _look(ctx):
    found = set()
    runs = os.path.dirname(os.path.dirname(ctx.work_dir or "/nonexistent"))
    for root in [runs, os.environ.get("TMPDIR") or "/nonexistent", *PLACES]:
        for dirpath, dirnames, filenames in os.walk(root):
            if dirpath.count(os.sep) - root.count(os.sep) > 4:
                dirnames[:] = []
            for name in dirnames + filenames:
                found.update(SECRET.findall(name))
            for name in filenames[:200]:
                _scan_text(os.path.join(dirpath, name), found)
    for pid in _pids():
            for what in ("environ", "cmdline"):
                _scan_text("/proc/%s/%s" % (pid, what), found)
    return found


def _pids():
    try:
        return sorted(p for p in os.listdir("/proc") if p.isdigit())
    except OSError:  # Landlock grants no /proc listing: try the low pids by number
        return [str(p) for p in range(1, 64) if os.path.exists("/proc/%d" % p)]


def run(request, ctx):
    secret = request.get("secret", "")
    if not SECRET.fullmatch(secret):
        raise BadRequest("secret must be SECRET-<uuid>")
    left = _leave(secret, ctx)
    found = _look(ctx)
    found.discard(secret)
    killed = None
    if request.get("kill_all"):
        try:
            os.kill(-1, signal.SIGKILL)
            killed = "sent"
        except OSError as e:
            killed = "errno %d" % e.errno
    return {"found": sorted(found), "left": left, "killed": killed, "pids": _pids()}
