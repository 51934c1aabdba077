"""Hostile, for warm instances (tests/it/warm.rs): answers before it is asked. At import, that
is while a warm instance waits for its request, it writes a result to stdout. The Hall must
never hand a request to an instance that changed while it waited. Protocol 2: the test copies
the standard workers/bootstrap.py beside this file."""

import sys

sys.stdout.write('{"early": true}\n')
sys.stdout.flush()

WORKER_SPECIES = "wrk.hello.greeter"


class BadRequest(Exception):
    code = "bad_request"


class WorkFailed(Exception):
    code = "work_failed"


def run(request, ctx):
    return {"late": True}
