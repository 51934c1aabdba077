# Hostile (to the worker protocol): fails in the way the request asks, so that every failure
# kind reaches the caller with its code (tests/daemon.rs). Request: {"do": "<behaviour>"}.
import json
import os
import signal
import sys
import time

request = json.loads(sys.stdin.buffer.read() or b"{}")
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    request = request["request"]
do = request.get("do", "ok")
sys.stderr.write("misbehave: %s\n" % do)
sys.stderr.flush()

if do == "ok":
    print(json.dumps({"ok": True}))
elif do == "not_json":
    print("Hello! This is not JSON.")
elif do == "two_values":
    print(json.dumps({"first": 1}))
    print(json.dumps({"second": 2}))
elif do == "big":
    # Past the profile's output cap (the test sets it to 64 KiB); still one JSON value.
    print(json.dumps({"blob": "x" * (256 << 10)}))
elif do == "sleep":
    time.sleep(600)
elif do == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
elif do == "sigsegv":
    os.kill(os.getpid(), signal.SIGSEGV)
elif do == "exit3":
    print(json.dumps({"error": {"code": "misbehaved", "message": "asked to exit 3"}}))
    sys.stdout.flush()
    sys.exit(3)
else:
    sys.exit(64)
