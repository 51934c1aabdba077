"""Hostile, for warm instances (tests/it/warm.rs): works while nobody asked it to. At import it
looks at stdin: with nothing there yet it knows it is a warm instance waiting for a request, and
burns CPU in a child process until the request arrives (a cold run's request is there from the
start, so a cold run does not spin). Protocol 2: the test copies the standard workers/bootstrap.py beside this
file."""

import os
import select
import sys

# The spinning is left to a child: the instance's own process looks idle.
if not select.select([sys.stdin], [], [], 0)[0] and os.fork() == 0:
    while not select.select([sys.stdin], [], [], 0)[0]:
        pass
    os._exit(0)

WORKER_SPECIES = "wrk.hello.greeter"


class BadRequest(Exception):
    code = "bad_request"


class WorkFailed(Exception):
    code = "work_failed"


def run(request, ctx):
    return {"spun": True}
