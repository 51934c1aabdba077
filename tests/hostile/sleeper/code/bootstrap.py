# Hostile: sleeps past the timeout. Request: {"ignore_sigterm": bool}.
import json, signal, sys, time

req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
if req.get("ignore_sigterm"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("sleeping", flush=True)
time.sleep(3600)
