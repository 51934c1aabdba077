# Hostile: sleeps past the timeout. Request: {"ignore_sigterm": bool}.
import json, signal, sys, time

req = json.load(sys.stdin)
if req.get("ignore_sigterm"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("sleeping", flush=True)
time.sleep(3600)
