"""Unit tests of web_fetcher against a real loopback HTTP server (stdlib unittest)."""

import hashlib
import http.server
import io
import json
import os
import socket
import sys
import threading
import time
import unittest
from unittest import mock

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic as wl  # noqa: E402

DOC = "Første linje.\n\nSecond paragraph, with UTF-8: \u00e9\u00e8 \u4e2d\u6587.\n"
PAGE = ("<html><head><title> The  Title </title><style>p{}</style><script>var x='no';</script>"
        "</head><body><h1>Heading</h1><p>First &amp; only<br>line two</p><div>Block</div></body></html>")
TRACEPARENT = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"


class Handler(http.server.BaseHTTPRequestHandler):
    seen_headers = {}

    def log_message(self, *args):
        pass

    def send(self, status, ctype, body, extra=()):
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        Handler.seen_headers[self.path] = dict(self.headers)
        p = self.path
        if p == "/doc.txt":
            self.send(200, "text/plain; charset=utf-8", DOC.encode("utf-8"))
        elif p == "/page.html":
            self.send(200, "text/html; charset=utf-8", PAGE.encode("utf-8"))
        elif p == "/latin1":
            self.send(200, "text/plain; charset=iso-8859-1", "caf\u00e9".encode("latin-1"))
        elif p == "/bogus-charset":
            self.send(200, "text/plain; charset=x-nonsense", b"ok \xff")
        elif p == "/json":
            self.send(200, "application/json", b'{"a": 1}')
        elif p == "/png":
            self.send(200, "image/png", b"\x89PNG\r\n")
        elif p == "/missing":
            self.send(404, "text/plain", b"nope")
        elif p == "/announced-huge":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(10 ** 9))
            self.end_headers()
        elif p == "/unannounced-big":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                self.wfile.write(b"x" * 100000)
            except OSError:
                pass
            self.close_connection = True
        elif p == "/slow":
            time.sleep(1.0)
            self.send(200, "text/plain", b"late")
        elif p == "/redirect-same":
            self.send(302, "text/plain", b"", [("Location", "/doc.txt")])
        elif p == "/redirect-port":
            self.send(302, "text/plain", b"", [("Location", "http://127.0.0.1:1/doc.txt")])
        elif p == "/redirect-external":
            self.send(302, "text/plain", b"", [("Location", "http://example.com/")])
        elif p == "/redirect-file":
            self.send(302, "text/plain", b"", [("Location", "file:///etc/passwd")])
        elif p == "/loop":
            self.send(302, "text/plain", b"", [("Location", "/loop2")])
        elif p == "/loop2":
            self.send(302, "text/plain", b"", [("Location", "/loop")])
        else:
            self.send(404, "text/plain", b"unknown")


class Fetch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.server.daemon_threads = True
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()
        cls.base = "http://127.0.0.1:%d" % cls.server.server_address[1]

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def ctx(self):
        return bootstrap.Context("cid-fetch", traceparent=TRACEPARENT, worker=wl.WORKER_SPECIES,
                                 stream=io.StringIO())

    def run_ok(self, path, **extra):
        return wl.run(dict({"url": self.base + path}, **extra), self.ctx())

    def failure(self, path, **extra):
        with self.assertRaises(wl.WorkFailed) as cm:
            self.run_ok(path, **extra)
        return cm.exception

    def test_plain_text_document(self):
        out = self.run_ok("/doc.txt")
        body = DOC.encode("utf-8")
        self.assertEqual(out["status"], 200)
        self.assertEqual(out["url"], self.base + "/doc.txt")
        self.assertEqual(out["content_type"], "text/plain")
        self.assertEqual(out["charset"], "utf-8")
        self.assertIsNone(out["title"])
        self.assertEqual(out["text"], DOC)
        self.assertEqual(out["bytes"], len(body))
        self.assertEqual(out["sha256"], hashlib.sha256(body).hexdigest())

    def test_trace_context_is_forwarded(self):
        self.run_ok("/doc.txt")
        headers = {k.lower(): v for k, v in Handler.seen_headers["/doc.txt"].items()}
        self.assertEqual(headers["traceparent"], TRACEPARENT)
        self.assertEqual(headers["user-agent"], wl.USER_AGENT)
        self.assertEqual(headers["accept-encoding"], "identity")

    def test_html_gives_visible_text_and_title(self):
        out = self.run_ok("/page.html")
        self.assertEqual(out["title"], "The Title")
        self.assertEqual(out["text"], "Heading\n\nFirst & only\nline two\n\nBlock")
        self.assertEqual(out["sha256"], hashlib.sha256(PAGE.encode()).hexdigest())

    def test_declared_charset_is_used(self):
        self.assertEqual(self.run_ok("/latin1")["text"], "caf\u00e9")

    def test_unknown_charset_falls_back_to_utf8_with_replacement(self):
        out = self.run_ok("/bogus-charset")
        self.assertEqual((out["charset"], out["text"]), ("utf-8", "ok \ufffd"))

    def test_json_is_text(self):
        self.assertEqual(self.run_ok("/json")["text"], '{"a": 1}')

    def test_binary_is_refused(self):
        self.assertEqual(self.failure("/png").code, "unsupported_content_type")

    def test_http_error_status_fails(self):
        err = self.failure("/missing")
        self.assertEqual(err.code, "http_status")
        self.assertIn("404", str(err))

    def test_announced_oversize_fails_before_reading(self):
        self.assertEqual(self.failure("/announced-huge", max_bytes=1000).code, "response_too_large")

    def test_unannounced_oversize_is_capped(self):
        self.assertEqual(self.failure("/unannounced-big", max_bytes=1000).code, "response_too_large")

    def test_timeout(self):
        self.assertEqual(self.failure("/slow", timeout_seconds=0.2).code, "fetch_timeout")

    def test_same_origin_redirect_is_followed(self):
        out = self.run_ok("/redirect-same")
        self.assertEqual((out["url"], out["text"]), (self.base + "/doc.txt", DOC))

    def test_redirect_to_other_port_is_refused(self):
        self.assertEqual(self.failure("/redirect-port").code, "redirect_refused")

    def test_redirect_to_other_host_is_refused(self):
        self.assertEqual(self.failure("/redirect-external").code, "redirect_refused")

    def test_redirect_to_file_scheme_is_refused(self):
        self.assertEqual(self.failure("/redirect-file").code, "redirect_refused")

    def test_redirect_loop_fails(self):
        self.assertEqual(self.failure("/loop").code, "http_status")

    def test_connection_refused_fails(self):
        # A port that was just bound and released: nothing listens there now.
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        with self.assertRaises(wl.WorkFailed) as cm:
            wl.run({"url": "http://127.0.0.1:%d/x" % port, "timeout_seconds": 2}, self.ctx())
        self.assertEqual(cm.exception.code, "fetch_failed")

    def test_a_sandbox_refusal_is_egress_denied(self):
        # Under the Hall, Landlock answers connect() to a port outside the allowlist with EACCES.
        def refuse(self):
            raise PermissionError(13, "Permission denied")
        with mock.patch("http.client.HTTPConnection.connect", refuse):
            err = self.failure("/doc.txt")
        self.assertEqual(err.code, "egress_denied")
        self.assertIn("privilege envelope", str(err))

    def test_fragment_is_not_sent(self):
        out = self.run_ok("/doc.txt#section")
        self.assertEqual(out["url"], self.base + "/doc.txt")


class UrlPolicy(unittest.TestCase):
    """Every spelling that could leave loopback (or reach another service) is refused before any
    connection is made."""

    REFUSED = [
        "https://127.0.0.1/", "ftp://127.0.0.1/", "file:///etc/passwd", "gopher://127.0.0.1:70/",
        "http://localhost:18080/", "http://127.1/", "http://2130706433/", "http://0x7f.0.0.1/",
        "http://0177.0.0.1/", "http://[::1]:18080/", "http://[::ffff:127.0.0.1]/",
        "http://127.0.0.1.evil.example/", "http://evil.example/?127.0.0.1",
        "http://user@127.0.0.1/", "http://127.0.0.1:18080@evil.example/",
        "http://127.0.0.1:/", "http://127.0.0.1:+80/", "http://127.0.0.1:99999/",
        "http://127.0.0.1:0/", "http://127.0.0.1/a b", "http://127.0.0.1/\n", "http://127.0.0.1/\u00e9",
        "//127.0.0.1/", "127.0.0.1:18080/x", "",
    ]

    def test_refused_spellings(self):
        for url in self.REFUSED:
            with self.subTest(url=url):
                with self.assertRaises(wl.BadRequest) as cm:
                    wl.check_url(url)
                self.assertEqual(cm.exception.code, "url_not_allowed")

    def test_accepted(self):
        self.assertEqual(wl.check_url("http://127.0.0.1:18080/document.txt"),
                         (("http", "127.0.0.1", 18080), "http://127.0.0.1:18080/document.txt"))
        self.assertEqual(wl.check_url("http://127.0.0.1/x?q=1")[0], ("http", "127.0.0.1", 80))

    def test_schema_agrees_on_refusals(self):
        with open(os.path.join(PACKAGE, "config.schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        for url in self.REFUSED:
            if url in ("http://127.0.0.1:0/", "http://127.0.0.1:99999/"):
                continue  # the schema's pattern does not do arithmetic; check_url does
            with self.subTest(url=url):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate({"url": url}, schema)


class Schema(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(PACKAGE, "config.schema.json"), encoding="utf-8") as f:
            self.schema = json.load(f)

    def test_example_request_is_valid(self):
        with open(os.path.join(PACKAGE, "example.request.json"), encoding="utf-8") as f:
            request = bootstrap.validate(json.load(f), self.schema)
        self.assertEqual(wl.check_url(request["url"])[0][2], 18080)

    def test_limits(self):
        url = "http://127.0.0.1:18080/x"
        for bad in [{"url": url, "max_bytes": 0}, {"url": url, "max_bytes": 524289},
                    {"url": url, "timeout_seconds": 0}, {"url": url, "timeout_seconds": 31},
                    {"url": url, "max_bytes": True}, {"url": url, "headers": {}}]:
            with self.subTest(bad=bad):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate(bad, self.schema)
        self.assertEqual(bootstrap.validate({"url": url, "max_bytes": 1000.0}, self.schema)["max_bytes"], 1000)


if __name__ == "__main__":
    unittest.main()
