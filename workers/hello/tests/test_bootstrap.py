"""Tests of the worker protocol implemented by code/bootstrap.py.

bootstrap.py is byte-identical in every bundled worker (tests/it/workers.rs checks that), so its
protocol is tested once, here, through hello.
"""

import io
import json
import os
import sys
import unittest
from unittest import mock

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic  # noqa: E402

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ENV = {"WCP_CORRELATION_ID": "3f1c2d9e-0000-4000-8000-000000000001", "TRACEPARENT": TRACEPARENT,
       "WCP_WORK_DIR": "/tmp/work", "WCP_WRITE_DIRS": "/tmp/a:/tmp/b"}


def call(stdin, env=None):
    """Runs bootstrap.main in-process; returns (exit, stdout lines, stderr records)."""
    out, err = io.BytesIO(), io.StringIO()
    data = stdin if isinstance(stdin, bytes) else stdin.encode("utf-8")
    code = bootstrap.main(stdin=io.BytesIO(data), stdout=out, stderr=err,
                          environ=ENV if env is None else env)
    lines = out.getvalue().decode("utf-8").splitlines()
    logs = [json.loads(line) for line in err.getvalue().splitlines()]
    return code, lines, logs


class Protocol(unittest.TestCase):
    def assert_error(self, stdin, code, exit_code=2, env=None):
        status, lines, logs = call(stdin, env)
        self.assertEqual(status, exit_code)
        self.assertEqual(len(lines), 1, "exactly one JSON object on stdout")
        obj = json.loads(lines[0])
        self.assertEqual(set(obj), {"error", "correlation_id"})
        self.assertEqual(set(obj["error"]), {"code", "message"})
        self.assertEqual(obj["error"]["code"], code)
        self.assertNotIn("Traceback", lines[0])
        return obj, logs

    def test_success_is_one_json_line_with_the_correlation_id(self):
        status, lines, logs = call('{"name": "Ada"}')
        self.assertEqual(status, 0)
        self.assertEqual(len(lines), 1)
        self.assertEqual(json.loads(lines[0]),
                         {"greeting": "Hello, Ada!", "correlation_id": ENV["WCP_CORRELATION_ID"]})

    def test_logs_are_json_lines_on_stderr_with_correlation_and_trace(self):
        _, _, logs = call('{"name": "Ada"}')
        self.assertGreaterEqual(len(logs), 2)
        for record in logs:
            self.assertEqual(record["correlation_id"], ENV["WCP_CORRELATION_ID"])
            self.assertEqual(record["trace_id"], "0af7651916cd43dd8448eb211c80319c")
            self.assertEqual(record["worker"], "wrk.hello.greeter")
            self.assertIn(record["level"], ("info", "warning", "error"))

    def test_unicode_output_is_utf8(self):
        status, lines, _ = call('{"name": "Zo\\u00eb"}')
        self.assertEqual((status, json.loads(lines[0])["greeting"]), (0, "Hello, Zoë!"))

    def test_missing_correlation_id(self):
        obj, _ = self.assert_error('{"name": "Ada"}', "missing_correlation_id", env={})
        self.assertIsNone(obj["correlation_id"])

    def test_malformed_correlation_id(self):
        for bad in ["has space", "x" * 129, "tab\there", "é"]:
            with self.subTest(bad=bad):
                self.assert_error('{"name": "Ada"}', "invalid_correlation_id",
                                  env={"WCP_CORRELATION_ID": bad})

    def test_relative_write_dir(self):
        self.assert_error('{"name": "Ada"}', "invalid_environment",
                          env={"WCP_CORRELATION_ID": "c", "WCP_WRITE_DIRS": "/ok:relative"})

    def test_malformed_traceparent_is_ignored_with_a_warning(self):
        status, lines, logs = call('{"name": "Ada"}', {"WCP_CORRELATION_ID": "c", "TRACEPARENT": "junk"})
        self.assertEqual(status, 0)
        self.assertEqual(logs[0]["level"], "warning")
        self.assertIsNone(logs[-1]["trace_id"])

    def test_bad_json(self):
        for stdin in [b"", b"   \n", b"{", b"{'a': 1}", b'{"name": "Ada"} {}', b"\xff\xfe{}",
                      b'{"name": "a", "name": "b"}', b'{"name": NaN}', b'{"n": Infinity}',
                      b"[" * 100000]:
            with self.subTest(stdin=stdin[:20]):
                self.assert_error(stdin, "invalid_json")

    def test_not_an_object(self):
        for stdin in ['["Ada"]', '"Ada"', "null", "42"]:
            with self.subTest(stdin=stdin):
                self.assert_error(stdin, "invalid_request")

    def test_schema_violations_name_the_field(self):
        obj, _ = self.assert_error('{}', "invalid_request")
        self.assertIn("name is required", obj["error"]["message"])
        obj, _ = self.assert_error('{"nam": "Ada"}', "invalid_request")
        self.assertIn('"nam" is not a known field; allowed: name', obj["error"]["message"])

    def test_unpaired_surrogate_is_refused(self):
        self.assert_error('{"name": "\\ud800"}', "invalid_request")

    def test_oversized_request(self):
        with mock.patch.object(bootstrap, "MAX_REQUEST_BYTES", 32):
            self.assert_error('{"name": "' + "a" * 40 + '"}', "request_too_large")

    def test_worker_bad_request_exits_2(self):
        self.assert_error('{"name": "   "}', "invalid_request")

    def test_worker_failure_exits_1(self):
        def fail(request, ctx):
            raise worker_logic.WorkFailed("upstream_down", "the upstream is down")
        with mock.patch.object(worker_logic, "run", fail):
            obj, _ = self.assert_error('{"name": "Ada"}', "upstream_down", exit_code=1)
        self.assertEqual(obj["error"]["message"], "the upstream is down")

    def test_a_crash_is_an_internal_error_with_the_traceback_on_stderr_only(self):
        def crash(request, ctx):
            raise KeyError("secret-internal-detail")
        with mock.patch.object(worker_logic, "run", crash):
            obj, logs = self.assert_error('{"name": "Ada"}', "internal_error", exit_code=1)
        self.assertNotIn("secret-internal-detail", json.dumps(obj))
        self.assertTrue(any("secret-internal-detail" in r.get("fields", {}).get("traceback", "")
                            for r in logs))

    def test_bad_results_are_internal_errors(self):
        for result in [["not", "a", "dict"], {"error": "x"}, {"x": float("nan")}, {"x": object()}]:
            with self.subTest(result=repr(result)[:30]):
                with mock.patch.object(worker_logic, "run", lambda request, ctx: result):
                    self.assert_error('{"name": "Ada"}', "internal_error", exit_code=1)


class Validator(unittest.TestCase):
    def test_unsupported_keywords_are_refused(self):
        for schema in [{"oneOf": []}, {"$ref": "#/x"}, {"properties": {"a": {"uniqueItems": True}}}]:
            with self.subTest(schema=schema):
                with self.assertRaises(bootstrap.SchemaError):
                    bootstrap.validate({"a": [1]}, schema)

    def test_every_bundled_schema_is_supported(self):
        workers = os.path.dirname(PACKAGE)
        for name in sorted(os.listdir(workers)):
            path = os.path.join(workers, name, "config.schema.json")
            if os.path.exists(path):
                with self.subTest(worker=name):
                    schema = bootstrap.load_schema(path)
                    with open(os.path.join(workers, name, "example.request.json"), encoding="utf-8") as f:
                        bootstrap.validate(json.load(f), schema)

    def test_integers(self):
        schema = {"type": "integer", "minimum": 1}
        self.assertEqual(bootstrap.validate(3.0, schema), 3)
        self.assertIsInstance(bootstrap.validate(3.0, schema), int)
        for bad in [True, 2.5, "3", 0]:
            with self.subTest(bad=bad):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate(bad, schema)

    def test_numbers_exclude_booleans(self):
        with self.assertRaises(bootstrap.ProtocolError):
            bootstrap.validate(False, {"type": "number"})
        self.assertEqual(bootstrap.validate(1, {"type": "number"}), 1)

    def test_nullable_and_enum_and_const(self):
        self.assertIsNone(bootstrap.validate(None, {"type": ["string", "null"]}))
        self.assertEqual(bootstrap.validate("a", {"enum": ["a", "b"]}), "a")
        with self.assertRaises(bootstrap.ProtocolError):
            bootstrap.validate("c", {"enum": ["a", "b"]})
        with self.assertRaises(bootstrap.ProtocolError):
            bootstrap.validate(2, {"const": 1})
        with self.assertRaises(bootstrap.ProtocolError):
            bootstrap.validate(True, {"enum": [1, 2]})
        self.assertEqual(bootstrap.validate(1.0, {"enum": [1]}), 1.0)

    def test_patterns_follow_ecma_end_of_input(self):
        schema = {"type": "string", "pattern": "^[a-z]+$"}
        self.assertEqual(bootstrap.validate("abc", schema), "abc")
        with self.assertRaises(bootstrap.ProtocolError):
            bootstrap.validate("abc\n", schema)
        self.assertEqual(bootstrap.ecma_pattern(r"^[$a]\$x$"), r"^[$a]\$x\Z")

    def test_error_paths(self):
        schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}
        with self.assertRaises(bootstrap.ProtocolError) as cm:
            bootstrap.validate({"a": ["x", 1]}, schema)
        self.assertIn("a[1] must be string", cm.exception.message)


V2_ENV = {"WCP_WORKER_PROTOCOL": "2", "WCP_WORK_DIR": "/tmp/work", "WCP_WRITE_DIRS": "/tmp/a"}
CID = "3f1c2d9e-0000-4000-8000-000000000002"


def frame(request, **context):
    ctx = {"correlation_id": CID, "traceparent": TRACEPARENT, "timeout_ms": 1000}
    ctx.update(context)
    return json.dumps({"protocol": 2, "context": ctx, "request": request})


class ProtocolV2(unittest.TestCase):
    """Version 2: the context comes in the frame, never from the environment."""

    def test_the_frame_carries_request_and_context(self):
        status, lines, logs = call(frame({"name": "Ada"}), V2_ENV)
        self.assertEqual(status, 0)
        self.assertEqual(json.loads(lines[0]), {"greeting": "Hello, Ada!", "correlation_id": CID})
        for record in logs:
            self.assertEqual(record["correlation_id"], CID)
            self.assertEqual(record["trace_id"], "0af7651916cd43dd8448eb211c80319c")
        self.assertEqual(logs[0]["fields"]["protocol"], 2)

    def test_the_environment_cannot_supply_the_context(self):
        # A version 1 environment left over (or forged) is ignored: the frame decides.
        env = dict(V2_ENV, WCP_CORRELATION_ID="from-env", TRACEPARENT=TRACEPARENT)
        status, lines, _ = call(frame({"name": "Ada"}), env)
        self.assertEqual((status, json.loads(lines[0])["correlation_id"]), (0, CID))

    def test_a_bare_request_is_not_a_frame(self):
        status, lines, _ = call('{"name": "Ada"}', V2_ENV)
        obj = json.loads(lines[0])
        self.assertEqual((status, obj["error"]["code"]), (2, "invalid_frame"))

    def test_a_frame_is_not_a_request_under_version_1(self):
        # Under version 1 a frame-shaped payload is the agent's own JSON: the schema refuses it,
        # and the correlation id stays the Hall's.
        status, lines, _ = call(frame({"name": "Ada"}, correlation_id="forged"))
        obj = json.loads(lines[0])
        self.assertEqual((status, obj["error"]["code"]), (2, "invalid_request"))
        self.assertEqual(obj["correlation_id"], ENV["WCP_CORRELATION_ID"])

    def test_malformed_frames(self):
        for data, code in [
            (json.dumps({"protocol": 1, "context": {"correlation_id": CID}, "request": {}}),
             "invalid_frame"),
            (json.dumps({"protocol": 2.0, "context": {"correlation_id": CID}, "request": {}}),
             "invalid_frame"),
            (json.dumps({"protocol": 2, "context": {"correlation_id": CID}, "request": {},
                         "extra": 1}), "invalid_frame"),
            (json.dumps({"protocol": 2, "context": {"correlation_id": CID, "x": 1},
                         "request": {}}), "invalid_frame"),
            (json.dumps({"protocol": 2, "context": {}, "request": {}}), "missing_correlation_id"),
            (json.dumps({"protocol": 2, "context": {"correlation_id": "a b"}, "request": {}}),
             "invalid_correlation_id"),
            (json.dumps({"protocol": 2, "context": {"correlation_id": CID}, "request": []}),
             "invalid_request"),
            (frame({"name": "Ada"}) + frame({"name": "Eve"}), "invalid_json"),
            ("", "invalid_json"),
        ]:
            status, lines, _ = call(data, V2_ENV)
            self.assertEqual(status, 2, data)
            self.assertEqual(len(lines), 1, data)
            self.assertEqual(json.loads(lines[0])["error"]["code"], code, data)

    def test_the_schema_still_applies(self):
        status, lines, _ = call(frame({"name": 1}), V2_ENV)
        self.assertEqual((status, json.loads(lines[0])["error"]["code"]), (2, "invalid_request"))

    def test_an_unknown_protocol_is_refused(self):
        status, lines, _ = call(frame({"name": "Ada"}), dict(V2_ENV, WCP_WORKER_PROTOCOL="3"))
        self.assertEqual((status, json.loads(lines[0])["error"]["code"]),
                         (2, "invalid_environment"))

    def test_the_package_loads_before_stdin_is_read(self):
        order = []

        class Stdin:
            def read(self, n):
                order.append("read")
                self.assertion = "worker_logic" in sys.modules
                return frame({"name": "Ada"}).encode("utf-8")

        stdin = Stdin()
        out, err = io.BytesIO(), io.StringIO()
        self.assertEqual(bootstrap.main(stdin=stdin, stdout=out, stderr=err, environ=V2_ENV), 0)
        self.assertEqual(order, ["read"])
        self.assertTrue(stdin.assertion)


if __name__ == "__main__":
    unittest.main()
