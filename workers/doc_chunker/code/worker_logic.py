"""doc_chunker: splits a document into ordered chunks at paragraph and sentence boundaries
(cap.doc.chunk, wrk.doc.chunker), step 2 of the WCP research pipeline. Pure: no I/O.

The algorithm (deterministic; offsets are Python string indices, i.e. Unicode code points):
1. Paragraphs are separated by blank lines (a line break, optional spaces/tabs, another line
   break; ``\\r\\n`` counts as a line break). Leading/trailing whitespace is not part of one.
2. Each paragraph is split into sentences after ``.``, ``!``, ``?`` or ``…`` (plus any closing
   quotes or brackets) that are followed by whitespace.
3. A sentence longer than ``max_chars`` is cut at the last whitespace before the limit (or hard
   at the limit when a single "word" is longer).
4. Units are packed greedily: a chunk is the exact source span from its first unit's start to
   its last unit's end (so the text between sentences — spaces, newlines, blank lines — is kept
   verbatim) and is at most ``max_chars`` long. A chunk is closed early at a paragraph boundary
   once it is at least half full, so chunks prefer to end where paragraphs end.
5. With ``overlap`` > 0, the next chunk starts with the previous chunk's trailing whole units
   whose span is at most ``overlap`` characters (never the whole previous chunk, and only as many
   as still leave room for a new unit), so overlap is sentence-aligned and ≤ ``overlap``.

Guarantees (tested): ``chunks[i] == text[spans[i].start:spans[i].end]``; every chunk is
non-empty, has no leading/trailing whitespace and is at most ``max_chars`` long; spans are
strictly increasing; every non-whitespace character of the text is in at least one chunk.
"""

import re

WORKER_SPECIES = "wrk.doc.chunker"
CAPABILITY = "cap.doc.chunk"

DEFAULT_MAX_CHARS = 1000
DEFAULT_OVERLAP = 0

_PARAGRAPH_BREAK = re.compile(r"(?:\r\n|\r|\n)[ \t\f\v]*(?:\r\n|\r|\n)\s*")
_SENTENCE_END = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(?=\s)")


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


def _trimmed(text, start, end):
    """The span [start, end) without leading/trailing whitespace, or None when blank."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def paragraphs(text):
    """Trimmed (start, end) spans of the paragraphs of ``text``."""
    spans, pos = [], 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        span = _trimmed(text, pos, m.start())
        if span:
            spans.append(span)
        pos = m.end()
    span = _trimmed(text, pos, len(text))
    if span:
        spans.append(span)
    return spans


def sentences(text, start, end):
    """Trimmed (start, end) spans of the sentences in text[start:end]."""
    spans, pos = [], start
    for m in _SENTENCE_END.finditer(text, start, end):
        span = _trimmed(text, pos, m.end())
        if span:
            spans.append(span)
        pos = m.end()
    span = _trimmed(text, pos, end)
    if span:
        spans.append(span)
    return spans


def _split_long(text, start, end, max_chars):
    """Cuts one over-long span into pieces of at most max_chars, at whitespace when possible."""
    pieces = []
    while end - start > max_chars:
        limit = start + max_chars
        cut = limit
        while cut > start and not text[cut].isspace():
            cut -= 1
        if cut == start:
            cut = limit  # one "word" longer than max_chars: cut it hard
        piece = _trimmed(text, start, cut)
        if piece:
            pieces.append(piece)
        nxt = _trimmed(text, cut, end)
        if not nxt:
            return pieces
        start = nxt[0]
    pieces.append((start, end))
    return pieces


def units(text, max_chars):
    """[(start, end, starts_paragraph)] in document order, each at most max_chars long."""
    out = []
    for p_start, p_end in paragraphs(text):
        first = True
        for s_start, s_end in sentences(text, p_start, p_end):
            for u_start, u_end in _split_long(text, s_start, s_end, max_chars):
                out.append((u_start, u_end, first))
                first = False
    return out


def chunk(text, max_chars=DEFAULT_MAX_CHARS, overlap=DEFAULT_OVERLAP):
    """Returns [(start, end)] chunk spans of ``text`` (see the module documentation)."""
    if max_chars < 1:
        raise BadRequest("invalid_request", "max_chars must be at least 1")
    if overlap < 0 or overlap >= max_chars:
        raise BadRequest("invalid_request",
                         "overlap must be at least 0 and less than max_chars (%d), got %d"
                         % (max_chars, overlap))
    us = units(text, max_chars)
    chunks = []
    i = 0
    fresh = 0  # index of the first unit not yet in any chunk
    while i < len(us):
        first = i
        j = i + 1  # units[first:j] are in the chunk
        while j < len(us):
            start, end = us[first][0], us[j][1]
            if end - start > max_chars:
                break
            half_full = (us[j - 1][1] - start) * 2 >= max_chars
            if us[j][2] and half_full and j > fresh:
                break  # at a paragraph boundary, at least half full, something new: end here
            j += 1
        chunks.append((us[first][0], us[j - 1][1]))
        if j >= len(us):
            break
        fresh = j
        # The next chunk starts at unit j, moved back over trailing units for the overlap:
        # never the whole chunk, and only while the next new unit still fits.
        k = j
        if overlap:
            while (k - 1 > first and us[j - 1][1] - us[k - 1][0] <= overlap
                   and us[j][1] - us[k - 1][0] <= max_chars):
                k -= 1
        i = k
    return chunks


def run(request, ctx):
    """``{"text", "max_chars"?, "overlap"?}`` -> ``{"chunks", "spans", "count", "max_chars",
    "overlap"}``."""
    text = request["text"]
    max_chars = request.get("max_chars", DEFAULT_MAX_CHARS)
    overlap = request.get("overlap", DEFAULT_OVERLAP)
    if not text.strip():
        raise BadRequest("empty_document", "text has no non-whitespace characters; nothing to chunk")
    spans = chunk(text, max_chars, overlap)
    ctx.log("info", "chunked", chars=len(text), chunks=len(spans), max_chars=max_chars,
            overlap=overlap)
    return {
        "chunks": [text[s:e] for s, e in spans],
        "spans": [{"start": s, "end": e} for s, e in spans],
        "count": len(spans),
        "max_chars": max_chars,
        "overlap": overlap,
    }
