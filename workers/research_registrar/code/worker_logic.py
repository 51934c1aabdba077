"""research_registrar: stores a processed document in a SQLite knowledge store
(cap.research.register, wrk.research.registrar), the last step of the WCP research pipeline.

The store is ``research.sqlite3`` in the worker's first writable directory (WCP_WRITE_DIRS[0],
the Hall's mapping of the record's ``filesystem_writes: ["knowledge/"]``); nothing is written
anywhere else (SQLite's rollback journal sits beside the store; temporary tables stay in memory).

Registration is content-addressed and so idempotent: ``record_id`` is derived from what is
stored (title, source URL, document hash, chunks, embeddings), and registering the same thing
again returns the same ``record_id`` with ``created: false`` and changes nothing.

Consistency checks before anything is written (each a BadRequest, exit 2):
- one embedding per chunk, all of the same dimension;
- when ``merkle_root`` is given (doc_hasher's), the RFC 6962 root recomputed over the chunks
  must equal it, so the stored chunks are provably the ones that were hashed.

Schema (``PRAGMA user_version = 1``)::

    documents(record_id PK, title, source_url, doc_sha256, merkle_root, chunk_count, dimensions,
              correlation_id, registered_at)
    chunks(record_id -> documents, seq, text, sha256, embedding (JSON array), PK(record_id, seq))

A store with another ``user_version`` is refused (store_schema_mismatch), never migrated
silently.
"""

import datetime
import hashlib
import json
import os
import sqlite3
import stat

WORKER_SPECIES = "wrk.research.registrar"
CAPABILITY = "cap.research.register"

STORE_NAME = "research.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    record_id      TEXT PRIMARY KEY,
    title          TEXT,
    source_url     TEXT NOT NULL,
    doc_sha256     TEXT NOT NULL,
    merkle_root    TEXT NOT NULL,
    chunk_count    INTEGER NOT NULL,
    dimensions     INTEGER NOT NULL,
    correlation_id TEXT NOT NULL,
    registered_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    record_id TEXT NOT NULL REFERENCES documents(record_id) ON DELETE CASCADE,
    seq       INTEGER NOT NULL,
    text      TEXT NOT NULL,
    sha256    TEXT NOT NULL,
    embedding TEXT NOT NULL,
    PRIMARY KEY (record_id, seq)
);
CREATE INDEX IF NOT EXISTS documents_by_sha256 ON documents(doc_sha256);
"""


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


def merkle_root(leaves):
    """RFC 6962 Merkle Tree Hash (the same definition as doc_hasher's; raw 32 bytes)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def record_id_for(title, source_url, doc_sha256, chunks, embeddings):
    """``rec_`` + the first 32 hex digits of SHA-256 over the canonical JSON (sorted keys,
    compact, UTF-8) of what is stored."""
    canonical = json.dumps(
        {"title": title, "source_url": source_url, "doc_sha256": doc_sha256, "chunks": chunks,
         "embeddings": embeddings},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "rec_" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def check(request):
    """Consistency checks; returns ``(chunks, embeddings, dimensions, merkle_root hex)``."""
    chunks, embeddings = request["chunks"], request["embeddings"]
    if len(embeddings) != len(chunks):
        raise BadRequest("length_mismatch", "embeddings has %d vectors for %d chunks; send one per chunk"
                         % (len(embeddings), len(chunks)))
    dims = len(embeddings[0])
    for i, vec in enumerate(embeddings):
        if len(vec) != dims:
            raise BadRequest("dimension_mismatch", "embeddings[%d] has %d dimensions, embeddings[0] has %d"
                             % (i, len(vec), dims))
    root = merkle_root([c.encode("utf-8") for c in chunks]).hex()
    given = request.get("merkle_root")
    if given is not None and given != root:
        raise BadRequest("merkle_root_mismatch",
                         "merkle_root %s does not match the chunks (their RFC 6962 root is %s): the "
                         "chunks are not the ones that were hashed" % (given, root))
    return chunks, embeddings, dims, root


def store_path(write_dirs):
    if not write_dirs:
        raise WorkFailed("no_writable_dir",
                         "WCP_WRITE_DIRS is empty: the record declares filesystem_writes "
                         "[\"knowledge/\"] and the Hall must grant it")
    directory = write_dirs[0]
    if not os.path.isdir(directory):
        raise WorkFailed("no_writable_dir", "the writable directory %s does not exist" % directory)
    path = os.path.join(directory, STORE_NAME)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    if not stat.S_ISREG(st.st_mode):
        raise WorkFailed("store_error", "%s exists and is not a regular file (a symlink?); refusing it"
                         % STORE_NAME)
    return path


def open_store(path):
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("BEGIN IMMEDIATE")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if version == 0 and tables == 0:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("PRAGMA user_version = %d" % SCHEMA_VERSION)
    elif version != SCHEMA_VERSION:
        conn.execute("ROLLBACK")
        conn.close()
        raise WorkFailed("store_schema_mismatch",
                         "%s has schema version %d, this worker writes version %d; move it aside or "
                         "migrate it" % (STORE_NAME, version, SCHEMA_VERSION))
    return conn


def register(request, write_dirs, correlation_id, now=None):
    """Stores the document; returns the result dict (see :func:`run`)."""
    chunks, embeddings, dims, root = check(request)
    title = request.get("title")
    record_id = record_id_for(title, request["source_url"], request["doc_sha256"], chunks, embeddings)
    path = store_path(write_dirs)
    registered_at = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    try:
        conn = open_store(path)
        try:
            exists = conn.execute("SELECT 1 FROM documents WHERE record_id = ?", (record_id,)).fetchone()
            if not exists:
                conn.execute(
                    "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record_id, title, request["source_url"], request["doc_sha256"], root,
                     len(chunks), dims, correlation_id, registered_at))
                conn.executemany(
                    "INSERT INTO chunks VALUES (?, ?, ?, ?, ?)",
                    [(record_id, i, c, hashlib.sha256(c.encode("utf-8")).hexdigest(),
                      json.dumps(e, separators=(",", ":"), allow_nan=False))
                     for i, (c, e) in enumerate(zip(chunks, embeddings))])
            total = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise WorkFailed("store_error", "the knowledge store %s failed: %s" % (STORE_NAME, exc)) from None
    return {
        "record_id": record_id,
        "created": not exists,
        "store_path": STORE_NAME,
        "records_total": total,
        "chunk_count": len(chunks),
        "dimensions": dims,
        "merkle_root": root,
    }


def run(request, ctx):
    """``{"title"?, "source_url", "doc_sha256", "merkle_root"?, "chunks", "embeddings"}`` ->
    ``{"record_id", "created", "store_path", "records_total", "chunk_count", "dimensions",
    "merkle_root"}``; ``store_path`` is relative to the first writable directory."""
    out = register(request, ctx.write_dirs, ctx.correlation_id)
    ctx.log("info", "registered", record_id=out["record_id"], created=out["created"],
            records_total=out["records_total"], chunks=out["chunk_count"])
    return out
