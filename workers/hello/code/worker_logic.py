"""hello: the smallest useful worker (cap.hello.greet, wrk.hello.greeter).

Greets ``{"name": ...}``; used by the Hall's smoke tests and as the template for new workers.
Pure: no I/O, no clock, no environment.
"""

WORKER_SPECIES = "wrk.hello.greeter"
CAPABILITY = "cap.hello.greet"


class BadRequest(Exception):
    """The request is at fault (exit 2)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class WorkFailed(Exception):
    """The work failed although the request was fine (exit 1)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def greet(name):
    """The greeting for ``name`` (surrounding whitespace is not part of a name)."""
    name = " ".join(name.split())
    if not name:
        raise BadRequest("invalid_request", "name must contain a non-space character")
    return "Hello, %s!" % name


def run(request, ctx):
    """``{"name"}`` (validated against config.schema.json) -> ``{"greeting"}``."""
    greeting = greet(request["name"])
    ctx.log("info", "greeted", chars=len(greeting))
    return {"greeting": greeting}
