# Hostile: setsid + double fork so a grandchild outlives the run, then exits at once.
import json, os, sys, time

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        # The daemon: keep running long after the worker "finished".
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(3600)
        os._exit(0)
    os._exit(0)
os.wait()
print(json.dumps({"daemonised": True}))
