# Hostile: spreads memory over several processes, each under RLIMIT_AS on its own, so the run
# as a whole holds more than the per-process limit. Request: {"children": N, "each_mib": M}.
import json
import os
import sys

request = json.loads(sys.stdin.buffer.read() or b"{}")
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    request = request["request"]
children = int(request.get("children", 3))
each = int(request.get("each_mib", 96)) << 20

ready_r, ready_w = os.pipe()
go_r, go_w = os.pipe()
pids = []
for _ in range(children):
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        try:
            hoard = b"\x01" * each  # written, so resident, not just reserved
            os.write(ready_w, b"+")
        except MemoryError:
            os.write(ready_w, b"-")
        os.read(go_r, 1)  # hold it until every sibling holds its share
        os._exit(0)
    pids.append(pid)
os.close(ready_w)
os.close(go_r)
got = b""
while len(got) < children:
    chunk = os.read(ready_r, children)
    if not chunk:
        break
    got += chunk
os.close(go_w)
for pid in pids:
    os.waitpid(pid, 0)
print(json.dumps({"children": children, "holding": got.count(b"+"), "each_mib": each >> 20}))
