"""WCP worker bootstrap: the wcp-hall worker protocol, versions 1 and 2.

This file is byte-identical in every bundled worker package (a test enforces it); the worker's
own behaviour lives in ``worker_logic.py`` beside it. The Hall runs it as

    python3 -I -B code/bootstrap.py        (or: -E -s -B -X pycache_prefix=DIR /abs/path/code/bootstrap.py)

with an empty environment except PATH, LANG(/LC_ALL), HOME, TMPDIR and the WCP_* variables
below, from any working directory, with the package directory read-only.

Protocol
  stdin   version 1: the request payload: one JSON object, UTF-8, at most MAX_REQUEST_BYTES.
          Version 2: one frame, read after the package is loaded (so the Hall may start the
          worker before its request exists):
              {"protocol": 2, "context": {"correlation_id": ..., "traceparent": ...,
               "timeout_ms": ...}, "request": {...}}
          ending at end-of-file. Duplicate keys, NaN/Infinity and unpaired surrogates are
          refused in both. The request is validated against the package's
          ``config.schema.json`` before ``worker_logic.run`` sees it.
  stdout  exactly one JSON object and a newline: the result, or
          ``{"error": {"code": ..., "message": ...}}``. Both carry ``correlation_id``.
  stderr  log records, one JSON object per line (ts, level, worker, correlation_id, trace_id,
          msg, fields). Never a traceback on stdout.
  exit    0 success; 2 the request (or the calling environment) was rejected: fix the input;
          1 the work failed (upstream down, store unavailable, a bug): retrying may help.

Environment
  WCP_WORKER_PROTOCOL ``2`` selects version 2 (the package declares it in ``wcp-worker.json``
                      and the Hall sets it); absent or ``1``: version 1. Never guessed from stdin.
  WCP_CORRELATION_ID  version 1: required; printable ASCII, at most 128 characters. Echoed in
                      every result and log record. (Version 2: ``context.correlation_id``.)
  TRACEPARENT         version 1: optional W3C trace context (``00-<32 hex>-<16 hex>-<2 hex>``); a
                      malformed value is ignored with a warning. (Version 2:
                      ``context.traceparent``.)
  WCP_WORK_DIR        optional absolute path of the per-run scratch directory.
  WCP_WRITE_DIRS      optional colon-separated absolute paths of the worker's writable
                      directories, in the order of the record's ``filesystem_writes``.

worker_logic.py must define ``run(request: dict, ctx) -> dict``, ``BadRequest`` and
``WorkFailed`` (exceptions with ``.code`` and a message), and ``WORKER_SPECIES``. Under version
2 the process ends right after the result is written, without the interpreter's finalization:
close what ``run`` opens (``with``), and leave nothing to ``atexit``.
"""

import datetime
import json
import os
import re
import sys
import traceback

PROTOCOL_VERSIONS = ("1", "2")
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# What a version 2 frame may add around the request (its context).
MAX_FRAME_OVERHEAD = 4096
MAX_CORRELATION_ID_CHARS = 128

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_REQUEST = 2

CODE_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.dirname(CODE_DIR)
SCHEMA_PATH = os.path.join(PACKAGE_DIR, "config.schema.json")

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


class ProtocolError(Exception):
    """A rejected request or environment, before the worker's logic runs (exit 2)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class SchemaError(Exception):
    """The package's config.schema.json uses something this validator does not implement."""


class Context:
    """What a worker knows about its run besides the request. Plain data plus ``log``."""

    def __init__(self, correlation_id, traceparent=None, work_dir=None, write_dirs=(),
                 worker="unknown", stream=None):
        self.correlation_id = correlation_id
        self.traceparent = traceparent
        self.work_dir = work_dir
        self.write_dirs = list(write_dirs)
        self.worker = worker
        self._stream = stream if stream is not None else sys.stderr

    @property
    def trace_id(self):
        m = _TRACEPARENT.match(self.traceparent or "")
        return m.group(1) if m else None

    def log(self, level, msg, **fields):
        """Writes one JSON log record to stderr (never to stdout)."""
        record = {
            "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "level": level,
            "worker": self.worker,
            "correlation_id": self.correlation_id,
            "trace_id": self.trace_id,
            "msg": msg,
        }
        if fields:
            record["fields"] = fields
        try:
            self._stream.write(json.dumps(record, ensure_ascii=True, default=str) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must not turn a good result into a failure


# ---- JSON input ------------------------------------------------------------------------------

def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key %r" % key)
        obj[key] = value
    return obj


def _no_constants(name):
    raise ValueError("%s is not valid JSON" % name)


def parse_request(data, limit=None):
    """Bytes from stdin -> the request object, or ProtocolError."""
    if len(data) > (MAX_REQUEST_BYTES if limit is None else limit):
        raise ProtocolError("request_too_large",
                            "the request is larger than %d bytes" % MAX_REQUEST_BYTES)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("invalid_json", "the request is not UTF-8: %s" % exc) from None
    if not text.strip():
        raise ProtocolError("invalid_json", "the request is empty; send one JSON object on stdin")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise ProtocolError("invalid_json", "the request is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError("invalid_json", "the request is not valid JSON: %s" % exc) from None
    if not isinstance(value, dict):
        raise ProtocolError("invalid_request",
                            "the request must be a JSON object, got %s" % _json_type(value))
    return value


# ---- JSON Schema (the subset the bundled schemas use) ------------------------------------------

# Keywords that only annotate; everything else must be implemented below or the schema is refused
# (a silently ignored keyword would be a silently weaker check).
_ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "examples", "default",
                "format", "readOnly", "writeOnly", "deprecated"}
_IMPLEMENTED = {"type", "properties", "required", "additionalProperties", "items", "minItems",
                "maxItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
                "exclusiveMinimum", "exclusiveMaximum", "enum", "const"}


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value, name):
    kind = _json_type(value)
    if name == "number":
        return kind in ("integer", "number")
    if name == "integer":
        return kind == "integer" or (kind == "number" and value.is_integer())
    return kind == name


def _json_equal(a, b):
    """JSON equality: 1 == 1.0, but true != 1 (Python's == says True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def ecma_pattern(pattern):
    """Translates an ECMA-262 ``pattern`` for Python's ``re``: outside character classes ``$``
    means end of input there (Python's ``$`` also matches before a final newline, so
    ``^[a-z]+$`` would accept ``"abc\\n"``); it becomes ``\\Z``."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        elif c == "$" and not in_class:
            c = r"\Z"
        out.append(c)
        i += 1
    return "".join(out)


def _path(parent, key):
    if isinstance(key, int):
        return "%s[%d]" % (parent, key)
    return "%s.%s" % (parent, key) if parent else key


def _shown(value, limit=60):
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= limit else text[:limit] + "..."


def validate(value, schema, path=""):
    """Validates ``value`` against ``schema`` and returns it normalised (integral floats where
    an integer is expected become ints). Raises ProtocolError("invalid_request") naming the
    field, or SchemaError for a keyword this validator does not implement."""
    unknown = set(schema) - _ANNOTATIONS - _IMPLEMENTED
    if unknown:
        raise SchemaError("unsupported JSON Schema keyword(s) %s at %s"
                          % (sorted(unknown), path or "the root"))
    where = path or "the request"

    def fail(message):
        raise ProtocolError("invalid_request", "%s %s" % (where, message))

    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            fail("contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode")
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in types):
            fail("must be %s, got %s" % (" or ".join(types), _json_type(value)))
        if isinstance(value, float) and "integer" in types and "number" not in types:
            value = int(value)
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        fail("must be one of %s, got %s" % (_shown(schema["enum"], 200), _shown(value)))
    if "const" in schema and not _json_equal(value, schema["const"]):
        fail("must be %s" % _shown(schema["const"]))
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            fail("must be at least %d characters long" % schema["minLength"])
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            fail("must be at most %d characters long (got %d)" % (schema["maxLength"], len(value)))
        if "pattern" in schema and re.search(ecma_pattern(schema["pattern"]), value) is None:
            fail("does not match the pattern %s: %s" % (schema["pattern"], _shown(value)))
    if _json_type(value) in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            fail("must be at least %s, got %s" % (schema["minimum"], value))
        if "maximum" in schema and value > schema["maximum"]:
            fail("must be at most %s, got %s" % (schema["maximum"], value))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            fail("must be greater than %s, got %s" % (schema["exclusiveMinimum"], value))
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            fail("must be less than %s, got %s" % (schema["exclusiveMaximum"], value))
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            fail("must have at least %d item(s)" % schema["minItems"])
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            fail("must have at most %d items (got %d)" % (schema["maxItems"], len(value)))
        if "items" in schema:
            value = [validate(item, schema["items"], _path(path, i)) for i, item in enumerate(value)]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in value:
            try:
                key.encode("utf-8")
            except UnicodeEncodeError:
                fail("has a key with an unpaired surrogate")
        extra = schema.get("additionalProperties", True)
        if extra is False:
            # Unknown keys first: a misspelt key usually explains a "missing" one.
            for key in value:
                if key not in props:
                    raise ProtocolError(
                        "invalid_request",
                        "%s is not a known field; allowed: %s"
                        % (_shown(_path(path, key)), ", ".join(sorted(props)) or "none"))
        for key in schema.get("required", []):
            if key not in value:
                raise ProtocolError("invalid_request", "%s is required" % _path(path, key))
        out = {}
        for key, item in value.items():
            if key in props:
                out[key] = validate(item, props[key], _path(path, key))
            elif isinstance(extra, dict):
                out[key] = validate(item, extra, _path(path, key))
            else:
                out[key] = item
        value = out
    return value


def load_schema(path=SCHEMA_PATH):
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


# ---- the run --------------------------------------------------------------------------------

def _check_correlation_id(cid, where):
    if not isinstance(cid, str) or not cid:
        raise ProtocolError("missing_correlation_id",
                            "%s is not set; the Hall sets it for every dispatch" % where)
    if len(cid) > MAX_CORRELATION_ID_CHARS or not all(0x21 <= ord(c) <= 0x7E for c in cid):
        raise ProtocolError("invalid_correlation_id",
                            "%s must be 1-%d printable ASCII characters without spaces"
                            % (where, MAX_CORRELATION_ID_CHARS))
    return cid


def _set_traceparent(ctx, traceparent, where):
    if traceparent:
        if isinstance(traceparent, str) and _TRACEPARENT.match(traceparent):
            ctx.traceparent = traceparent
        else:
            ctx.log("warning", "ignoring a malformed %s" % where, traceparent=str(traceparent)[:80])


def _set_dirs(ctx, environ):
    work_dir = environ.get("WCP_WORK_DIR")
    if work_dir:
        if not os.path.isabs(work_dir):
            raise ProtocolError("invalid_environment", "WCP_WORK_DIR must be an absolute path")
        ctx.work_dir = work_dir
    dirs = [d for d in environ.get("WCP_WRITE_DIRS", "").split(":") if d]
    for d in dirs:
        if not os.path.isabs(d):
            raise ProtocolError("invalid_environment",
                                "WCP_WRITE_DIRS entries must be absolute paths, got %r" % d[:200])
    ctx.write_dirs = dirs


def context_from_env(environ, worker="unknown", stream=None):
    """Version 1: reads the WCP_* environment; raises ProtocolError naming the variable."""
    cid = _check_correlation_id(environ.get("WCP_CORRELATION_ID", ""), "WCP_CORRELATION_ID")
    ctx = Context(cid, worker=worker, stream=stream)
    _set_traceparent(ctx, environ.get("TRACEPARENT"), "TRACEPARENT")
    _set_dirs(ctx, environ)
    return ctx


def parse_frame(data, ctx):
    """Version 2: bytes from stdin -> the request object; fills in ``ctx`` from the frame's
    context. Raises ProtocolError."""
    if len(data) > MAX_REQUEST_BYTES + MAX_FRAME_OVERHEAD:
        raise ProtocolError("request_too_large",
                            "the request is larger than %d bytes" % MAX_REQUEST_BYTES)
    frame = parse_request(data, limit=MAX_REQUEST_BYTES + MAX_FRAME_OVERHEAD)
    if set(frame) != {"protocol", "context", "request"} or type(frame["protocol"]) is not int \
            or frame["protocol"] != 2:
        raise ProtocolError("invalid_frame",
                            "stdin must be one protocol 2 frame with exactly protocol (2), "
                            "context and request")
    context = frame["context"]
    if not isinstance(context, dict) or set(context) - {"correlation_id", "traceparent", "timeout_ms"}:
        raise ProtocolError("invalid_frame",
                            "the frame's context has only correlation_id, traceparent, timeout_ms")
    ctx.correlation_id = _check_correlation_id(context.get("correlation_id"),
                                               "context.correlation_id")
    _set_traceparent(ctx, context.get("traceparent"), "context.traceparent")
    request = frame["request"]
    if not isinstance(request, dict):
        raise ProtocolError("invalid_request",
                            "the request must be a JSON object, got %s" % _json_type(request))
    return request


def _encode(obj):
    """One compact JSON line, UTF-8 (raises ValueError for NaN/Infinity)."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def _emit(obj, stdout):
    stdout.write(_encode(obj))
    stdout.flush()


def _error(code, message, correlation_id):
    return {"error": {"code": code, "message": message}, "correlation_id": correlation_id}


def main(stdin=None, stdout=None, stderr=None, environ=None):
    """Runs one request; returns the exit code. The streams are binary (stdin, stdout) and text
    (stderr); the defaults are the process's own."""
    stdin = stdin if stdin is not None else sys.stdin.buffer
    stdout = stdout if stdout is not None else sys.stdout.buffer
    stderr = stderr if stderr is not None else sys.stderr
    environ = environ if environ is not None else os.environ
    sys.dont_write_bytecode = True
    if CODE_DIR not in sys.path:
        # -I (and -P) keep the script's directory off sys.path; worker_logic lives there.
        sys.path.insert(0, CODE_DIR)

    protocol = environ.get("WCP_WORKER_PROTOCOL", "1")
    try:
        if protocol not in PROTOCOL_VERSIONS:
            raise ProtocolError("invalid_environment",
                                "WCP_WORKER_PROTOCOL must be 1 or 2, got %r" % protocol[:20])
        if protocol == "1":
            ctx = context_from_env(environ, stream=stderr)
        else:
            ctx = Context(None, stream=stderr)
            _set_dirs(ctx, environ)
    except ProtocolError as exc:
        Context(None, stream=stderr).log("error", exc.message, code=exc.code)
        _emit(_error(exc.code, exc.message, None), stdout)
        return EXIT_BAD_REQUEST

    # The package loads before stdin is read: a version 2 worker may be started ahead of its
    # request, and its imports are then done when the request arrives.
    load_failure = None
    try:
        import worker_logic
        ctx.worker = worker_logic.WORKER_SPECIES
        schema = load_schema()
    except Exception:  # the package itself is broken: a bug, not bad input
        load_failure = traceback.format_exc()

    frame_error = None
    if protocol == "2":
        try:
            request = parse_frame(stdin.read(MAX_REQUEST_BYTES + MAX_FRAME_OVERHEAD + 1), ctx)
        except ProtocolError as exc:
            frame_error = exc

    if load_failure is not None:
        ctx.log("error", "the worker package failed to load", traceback=load_failure)
        _emit(_error("internal_error", "the worker package failed to load (see the worker log)",
                     ctx.correlation_id), stdout)
        return EXIT_FAILED

    try:
        if frame_error is not None:
            raise frame_error
        if protocol == "1":
            request = parse_request(stdin.read(MAX_REQUEST_BYTES + 1))
        request = validate(request, schema)
        ctx.log("info", "request accepted", protocol=int(protocol), keys=sorted(request))
        result = worker_logic.run(request, ctx)
        if not isinstance(result, dict) or "error" in result:
            raise TypeError("worker_logic.run must return a dict without an 'error' key")
        result = dict(result)
        result["correlation_id"] = ctx.correlation_id
        encoded = _encode(result)
    except ProtocolError as exc:
        code, message, status = exc.code, exc.message, EXIT_BAD_REQUEST
    except worker_logic.BadRequest as exc:
        code, message, status = exc.code, str(exc), EXIT_BAD_REQUEST
    except worker_logic.WorkFailed as exc:
        code, message, status = exc.code, str(exc), EXIT_FAILED
    except Exception:
        ctx.log("error", "unexpected failure", traceback=traceback.format_exc())
        code, message, status = "internal_error", "the worker failed unexpectedly (see the worker log)", EXIT_FAILED
    else:
        try:
            stdout.write(encoded)
            stdout.flush()
        except OSError as exc:
            ctx.log("error", "could not write the result", error=str(exc))
            return EXIT_FAILED
        ctx.log("info", "done", exit=EXIT_OK)
        return EXIT_OK

    ctx.log("error" if status == EXIT_FAILED else "warning", message, code=code, exit=status)
    try:
        _emit(_error(code, message, ctx.correlation_id), stdout)
    except OSError:
        pass
    return status


def _end(status):
    """Ends the process. Version 2 ends it at once (``os._exit``) once stdout and stderr are
    flushed: the interpreter's finalization costs more than a warm request itself (~5 ms), and a
    version 2 worker must not rely on it (close what it opens; no ``atexit`` work). Version 1
    exits normally."""
    if os.environ.get("WCP_WORKER_PROTOCOL") == "2":
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    _end(main())
