"""A worker registry service for the tests: exactly PyHall's documented RegistryClient API
(pyhall/registry_client.py, docs/registry-service.md), nothing more, on 127.0.0.1.

    python3 fake_registry.py STATE.json LOG.jsonl [PORT]   # prints the port, then serves

GET  /health                       {"ok": true, "version": ...}
GET  /api/v1/verify/{worker_id}    the worker's record, 404 when unknown
GET  /api/v1/ban-list?limit=N      a JSON array of {sha256, reason, reported_at, source, review_status}
POST /api/v1/ban-list/report       {sha256, reason, evidence_url?}; cookie pyhall_session required
PUT  /api/v1/workers/{id}/attest   {sha256, label, ai_generated, ai_service, ai_model, ai_session_id};
                                   Authorization: Bearer required; the worker becomes active
POST /api/v1/telemetry/decisions   {"decisions": [{"worker_id", "count"}]}

Everything the test controls is in STATE.json, read on every request (written atomically by the
test): "workers" (id -> verify fields), "bans" (entries), "session" and "bearer" (the accepted
tokens), "mode": "normal", or a misbehaviour: "ratelimit" (429), "error" (503), "slow" (answers
after 30 s), "huge" (a 64 MiB body), "redirect" (302 elsewhere), "garbage" (not JSON),
"dupkey" (a duplicate key). Every request is appended to LOG.jsonl: method, path, whether it
carried a cookie or a bearer token (never the tokens), and its JSON body.
"""

import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE, LOG = sys.argv[1], sys.argv[2]
LOCK = threading.Lock()


def load():
    with open(STATE) as f:
        return json.load(f)


def save(state):
    tmp = STATE + ".srv.tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, STATE)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return {"unparsable": raw.decode("utf-8", "replace")}

    def record(self, body):
        cookie = self.headers.get("Cookie") or ""
        auth = self.headers.get("Authorization") or ""
        entry = {
            "method": self.command,
            "path": self.path,
            "cookie": cookie.startswith("pyhall_session="),
            "bearer": auth.startswith("Bearer "),
            "user_agent": self.headers.get("User-Agent"),
            "body": body,
        }
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def misbehave(self, mode):
        if mode == "ratelimit":
            self.answer(429, {"error": "rate limited"})
        elif mode == "error":
            self.answer(503, {"error": "unavailable"})
        elif mode == "slow":
            time.sleep(30)
            self.answer(200, {})
        elif mode == "huge":
            size = 64 << 20
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b" " * (1 << 20)
            try:
                for _ in range(64):
                    self.wfile.write(chunk)
            except OSError:
                pass
        elif mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/stolen" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "garbage":
            self.answer(200, None, raw=b"<html>not json</html>")
        elif mode == "dupkey":
            self.answer(200, None, raw=b'{"status": "banned", "status": "active"}')
        else:
            return False
        return True

    def handle_any(self):
        body = self.body() if self.command in ("POST", "PUT") else None
        self.record(body)
        with LOCK:
            state = load()
        if self.misbehave(state.get("mode", "normal")):
            return
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.split("/")
        cookie = self.headers.get("Cookie") or ""
        auth = self.headers.get("Authorization") or ""
        if self.command == "GET" and url.path == "/health":
            return self.answer(200, {"ok": True, "version": "fake-1"})
        if self.command == "GET" and url.path.startswith("/api/v1/verify/") and len(parts) == 5:
            wid = urllib.parse.unquote(parts[4])
            w = state.get("workers", {}).get(wid)
            if w is None:
                return self.answer(404, {"error": "not found"})
            return self.answer(200, dict(w, worker_id=wid))
        if self.command == "GET" and url.path == "/api/v1/ban-list":
            q = urllib.parse.parse_qs(url.query)
            limit = int(q.get("limit", ["500"])[0])
            return self.answer(200, state.get("bans", [])[:limit])
        if self.command == "POST" and url.path == "/api/v1/ban-list/report":
            if cookie != "pyhall_session=" + state.get("session", ""):
                return self.answer(401, {"error": "login required"})
            if not isinstance(body, dict) or "sha256" not in body or "reason" not in body:
                return self.answer(400, {"error": "sha256 and reason required"})
            with LOCK:
                state = load()
                state.setdefault("reports", []).append(body)
                save(state)
            return self.answer(201, {"ok": True, "review_status": "pending"})
        if (self.command == "PUT" and len(parts) == 6 and parts[1:4] == ["api", "v1", "workers"]
                and parts[5] == "attest"):
            if auth != "Bearer " + state.get("bearer", ""):
                return self.answer(401, {"error": "bearer token required"})
            if not isinstance(body, dict) or "sha256" not in body:
                return self.answer(400, {"error": "sha256 required"})
            wid = urllib.parse.unquote(parts[4])
            attested_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            with LOCK:
                state = load()
                state.setdefault("workers", {})[wid] = {
                    "status": "active", "current_hash": body["sha256"], "banned": False,
                    "ban_reason": None, "attested_at": attested_at,
                    "ai_generated": bool(body.get("ai_generated")),
                    "ai_service": body.get("ai_service"), "ai_model": body.get("ai_model"),
                    "ai_session_fingerprint": body.get("ai_session_id"),
                }
                save(state)
            return self.answer(200, {"worker_id": wid, "package_hash": body["sha256"],
                                     "attested_at": attested_at, "status": "active"})
        if self.command == "POST" and url.path == "/api/v1/telemetry/decisions":
            if not isinstance(body, dict) or not isinstance(body.get("decisions"), list):
                return self.answer(400, {"error": "decisions required"})
            return self.answer(200, {"ok": True})
        return self.answer(404, {"error": "no such endpoint"})

    do_GET = do_POST = do_PUT = handle_any


port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
