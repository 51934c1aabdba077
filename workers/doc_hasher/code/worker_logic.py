"""doc_hasher: content digests of a document and its chunks (cap.doc.hash, wrk.doc.hasher),
step 4 of the WCP research pipeline. Pure: no I/O.

- ``document_sha256``: SHA-256 of the document text encoded as UTF-8 (for a UTF-8 text/plain
  fetch this equals web_fetcher's ``sha256`` of the raw body).
- ``chunk_sha256[i]``: SHA-256 of chunk i as UTF-8 (plain, for looking chunks up).
- ``merkle_root``: the RFC 6962 (Certificate Transparency) Merkle Tree Hash over the chunks as
  UTF-8, in order: leaf = SHA-256(0x00 || chunk), node = SHA-256(0x01 || left || right), a tree
  of n > 1 leaves splits at the largest power of two below n; no chunks gives SHA-256(""). The
  0x00/0x01 prefixes keep a leaf from ever being mistaken for an inner node, and the split rule
  never duplicates a leaf (so two different chunk lists cannot share a root that way). One root
  commits to every chunk and its position; research_registrar recomputes it to check the chunks
  it stores are the ones hashed here.
"""

import hashlib

WORKER_SPECIES = "wrk.doc.hasher"
CAPABILITY = "cap.doc.hash"

MERKLE_METHOD = "rfc6962-sha256"


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


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def merkle_root(leaves):
    """RFC 6962 Merkle Tree Hash of a list of byte strings (raw 32 bytes)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def run(request, ctx):
    """``{"text", "chunks"?}`` -> ``{"document_sha256", "document_bytes", "chunk_sha256",
    "merkle_root", "merkle_method", "chunk_count"}``."""
    document = request["text"].encode("utf-8")
    chunks = [c.encode("utf-8") for c in request.get("chunks", [])]
    root = merkle_root(chunks).hex()
    out = {
        "document_sha256": sha256_hex(document),
        "document_bytes": len(document),
        "chunk_sha256": [sha256_hex(c) for c in chunks],
        "merkle_root": root,
        "merkle_method": MERKLE_METHOD,
        "chunk_count": len(chunks),
    }
    ctx.log("info", "hashed", document_sha256=out["document_sha256"], chunks=len(chunks),
            merkle_root=root)
    return out
