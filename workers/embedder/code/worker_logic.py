"""embedder: a deterministic local text embedding (cap.ml.embed, wrk.ml.embedder), step 3 of the
WCP research pipeline. Pure: no I/O, no model file, no randomness.

The method, "wcp-hall.feature-hash.v1" (signed feature hashing; see README.md for a worked
example), for each chunk:
1. Lower-case the chunk with Python's ``str.lower()``.
2. Tokens are the maximal runs of characters for which ``str.isalnum()`` is true (regex
   ``[^\\W_]+``): for ASCII, ``[a-z0-9]+``; punctuation, spaces and ``_`` separate tokens.
3. Features, in order: ``"w:" + token`` for every token (unigrams), then
   ``"b:" + token[i] + " " + token[i+1]`` for every adjacent pair (bigrams).
4. For each feature, ``h = SHA-256(feature as UTF-8)``; dimension
   ``int.from_bytes(h[0:4], "big") % 64``; sign ``+1`` if ``h[4] & 1 == 0`` else ``-1``; add the
   sign to that dimension (every feature weighs 1; repeated features add up).
5. Divide by the Euclidean (L2) norm (a chunk without tokens stays the zero vector), round each
   component with Python's ``round(x, 6)`` and write ``-0.0`` as ``0.0``.

Similar texts share features and so have a high cosine similarity; the hashing makes the vector
independent of any vocabulary. It is a reproducible stand-in for a learned embedding, not one.
"""

import hashlib
import math
import re

WORKER_SPECIES = "wrk.ml.embedder"
CAPABILITY = "cap.ml.embed"

METHOD = "wcp-hall.feature-hash.v1"
DIMENSIONS = 64
DECIMALS = 6

_TOKEN = re.compile(r"[^\W_]+")


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


def tokens(text):
    return _TOKEN.findall(text.lower())


def features(text):
    """Unigram then bigram feature strings of ``text`` (step 3)."""
    toks = tokens(text)
    return ["w:" + t for t in toks] + ["b:%s %s" % pair for pair in zip(toks, toks[1:])]


def bucket(feature, dimensions=DIMENSIONS):
    """``(dimension, sign)`` of one feature (step 4)."""
    h = hashlib.sha256(feature.encode("utf-8")).digest()
    return int.from_bytes(h[0:4], "big") % dimensions, (1 if h[4] & 1 == 0 else -1)


def embed(text, dimensions=DIMENSIONS):
    """The embedding of one text: ``dimensions`` floats, unit length (or all zero)."""
    vec = [0] * dimensions
    for f in features(text):
        i, sign = bucket(f, dimensions)
        vec[i] += sign
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0:
        return [0.0] * dimensions
    return [round(x / norm, DECIMALS) + 0.0 for x in vec]


def cosine(a, b):
    """Cosine similarity of two vectors (0.0 when either is zero)."""
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return 0.0
    return sum(x * y for x, y in zip(a, b)) / (na * nb)


def run(request, ctx):
    """``{"chunks": [string]}`` -> ``{"embeddings", "dimensions", "method", "count"}``."""
    chunks = request["chunks"]
    embeddings = [embed(c) for c in chunks]
    empty = sum(1 for e in embeddings if not any(e))
    ctx.log("info", "embedded", chunks=len(chunks), dimensions=DIMENSIONS, method=METHOD,
            without_tokens=empty)
    return {
        "embeddings": embeddings,
        "dimensions": DIMENSIONS,
        "method": METHOD,
        "count": len(embeddings),
    }
