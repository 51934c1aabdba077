"""Unit tests of research_registrar against a real SQLite store in a temporary directory."""

import hashlib
import io
import json
import os
import sqlite3
import sys
import tempfile
import unittest

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic as wl  # noqa: E402


def load(name):
    with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
        return json.load(f)


def request(**over):
    chunks = ["First chunk.", "Second chunk."]
    req = {"source_url": "http://127.0.0.1:18080/doc.txt",
           "doc_sha256": hashlib.sha256(b"First chunk.\n\nSecond chunk.").hexdigest(),
           "chunks": chunks, "embeddings": [[0.6, 0.8], [1.0, 0.0]]}
    req.update(over)
    return req


class Registrar(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.knowledge = os.path.join(self.tmp.name, "knowledge")
        self.other = os.path.join(self.tmp.name, "other")
        os.mkdir(self.knowledge)
        os.mkdir(self.other)
        self.ctx = bootstrap.Context("cid-register", write_dirs=[self.knowledge, self.other],
                                     worker=wl.WORKER_SPECIES, stream=io.StringIO())

    def tearDown(self):
        self.tmp.cleanup()

    def db(self):
        return sqlite3.connect(os.path.join(self.knowledge, wl.STORE_NAME))

    def test_stores_in_the_first_writable_dir_only(self):
        out = wl.run(request(title="Doc"), self.ctx)
        self.assertEqual(out["store_path"], "research.sqlite3")
        self.assertEqual((out["records_total"], out["created"], out["chunk_count"], out["dimensions"]),
                         (1, True, 2, 2))
        self.assertRegex(out["record_id"], r"^rec_[0-9a-f]{32}$")
        self.assertEqual(sorted(os.listdir(self.knowledge)), ["research.sqlite3"])
        self.assertEqual(os.listdir(self.other), [])
        with self.db() as db:
            doc = db.execute("SELECT title, source_url, doc_sha256, merkle_root, chunk_count, dimensions, "
                             "correlation_id FROM documents").fetchone()
            rows = db.execute("SELECT seq, text, sha256, embedding FROM chunks ORDER BY seq").fetchall()
            version = db.execute("PRAGMA user_version").fetchone()[0]
        self.assertEqual(doc, ("Doc", "http://127.0.0.1:18080/doc.txt", request()["doc_sha256"],
                               out["merkle_root"], 2, 2, "cid-register"))
        self.assertEqual(rows, [(0, "First chunk.", hashlib.sha256(b"First chunk.").hexdigest(), "[0.6,0.8]"),
                                (1, "Second chunk.", hashlib.sha256(b"Second chunk.").hexdigest(), "[1.0,0.0]")])
        self.assertEqual(version, 1)

    def test_idempotent(self):
        first = wl.run(request(), self.ctx)
        again = wl.run(request(), self.ctx)
        self.assertEqual(again["record_id"], first["record_id"])
        self.assertEqual((again["created"], again["records_total"]), (False, 1))
        other = wl.run(request(source_url="http://127.0.0.1:18080/other.txt"), self.ctx)
        self.assertNotEqual(other["record_id"], first["record_id"])
        self.assertEqual((other["created"], other["records_total"]), (True, 2))
        with self.db() as db:
            self.assertEqual(db.execute("SELECT count(*) FROM chunks").fetchone()[0], 4)

    def test_record_id_is_content_addressed(self):
        a = wl.record_id_for(None, "u", "0" * 64, ["x"], [[1.0]])
        self.assertEqual(a, wl.record_id_for(None, "u", "0" * 64, ["x"], [[1.0]]))
        self.assertNotEqual(a, wl.record_id_for("t", "u", "0" * 64, ["x"], [[1.0]]))
        self.assertNotEqual(a, wl.record_id_for(None, "u", "0" * 64, ["y"], [[1.0]]))
        self.assertNotEqual(a, wl.record_id_for(None, "u", "0" * 64, ["x"], [[0.5]]))

    def test_merkle_root_is_checked(self):
        root = wl.merkle_root([b"First chunk.", b"Second chunk."]).hex()
        self.assertEqual(wl.run(request(merkle_root=root), self.ctx)["merkle_root"], root)
        with self.assertRaises(wl.BadRequest) as cm:
            wl.run(request(merkle_root=root, chunks=["First chunk.", "Tampered chunk."]), self.ctx)
        self.assertEqual(cm.exception.code, "merkle_root_mismatch")

    def test_inconsistent_embeddings_are_refused_before_writing(self):
        for bad, code in [({"embeddings": [[1.0, 0.0]]}, "length_mismatch"),
                          ({"embeddings": [[1.0, 0.0], [1.0]]}, "dimension_mismatch")]:
            with self.subTest(code=code):
                with self.assertRaises(wl.BadRequest) as cm:
                    wl.run(request(**bad), self.ctx)
                self.assertEqual(cm.exception.code, code)
        self.assertEqual(os.listdir(self.knowledge), [])

    def test_no_writable_dir(self):
        self.ctx.write_dirs = []
        with self.assertRaises(wl.WorkFailed) as cm:
            wl.run(request(), self.ctx)
        self.assertEqual(cm.exception.code, "no_writable_dir")

    def test_symlinked_store_is_refused(self):
        target = os.path.join(self.other, "elsewhere.sqlite3")
        os.symlink(target, os.path.join(self.knowledge, wl.STORE_NAME))
        with self.assertRaises(wl.WorkFailed) as cm:
            wl.run(request(), self.ctx)
        self.assertEqual(cm.exception.code, "store_error")
        self.assertFalse(os.path.exists(target))

    def test_foreign_schema_version_is_refused(self):
        with sqlite3.connect(os.path.join(self.knowledge, wl.STORE_NAME)) as db:
            db.execute("CREATE TABLE t (x)")
            db.execute("PRAGMA user_version = 7")
        with self.assertRaises(wl.WorkFailed) as cm:
            wl.run(request(), self.ctx)
        self.assertEqual(cm.exception.code, "store_schema_mismatch")

    def test_corrupt_store_is_a_store_error(self):
        with open(os.path.join(self.knowledge, wl.STORE_NAME), "wb") as f:
            f.write(b"this is not a database" * 100)
        with self.assertRaises(wl.WorkFailed) as cm:
            wl.run(request(), self.ctx)
        self.assertEqual(cm.exception.code, "store_error")

    def test_example_request_is_consistent_with_the_pipeline(self):
        schema = load("config.schema.json")
        req = bootstrap.validate(load("example.request.json"), schema)
        text = "\n\n".join(req["chunks"])
        self.assertEqual(req["doc_sha256"], hashlib.sha256(text.encode()).hexdigest())
        out = wl.run(req, self.ctx)  # its merkle_root is checked
        self.assertEqual((out["chunk_count"], out["dimensions"]), (2, 64))

    def test_schema_rejects(self):
        schema = load("config.schema.json")
        for bad in [request(doc_sha256="ABC"), request(doc_sha256="0" * 63), request(chunks=[]),
                    request(embeddings=[["x"]]), request(embeddings=[[]]), request(title=5),
                    request(source_url="not a url"), request(merkle_root="z" * 64),
                    request(extra=1), {"chunks": ["x"], "embeddings": [[1]]}]:
            with self.subTest(bad=str(bad)[:60]):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate(bad, schema)
        self.assertIsNone(bootstrap.validate(request(title=None), schema)["title"])


if __name__ == "__main__":
    unittest.main()
