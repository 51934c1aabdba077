"""web_fetcher: fetches one document over HTTP from a loopback server (cap.web.fetch,
wrk.web.fetcher), the first step of the WCP research pipeline.

Threat model: the request URL comes from an agent and may be hostile. The Hall's privilege
envelope limits egress to the record's allowlist (``127.0.0.1:18080``) but enforces it by TCP
port only (Landlock sees ports, not addresses), so this worker checks the destination itself
(defence in depth):
- only ``http://127.0.0.1[:port]/...`` is accepted: no other scheme (``file:``, ``https:``,
  ``ftp:``), no host name (no DNS, no ``localhost`` that resolves elsewhere), no user info, no
  other IP spelling (``127.1``, ``0x7f.0.0.1``, ``[::1]``);
- redirects are followed only to the same origin (scheme, host and port), at most 3;
- proxies from the environment are ignored (``ProxyHandler({})``);
- the body is read with a size cap (``max_bytes``) and the connection with a timeout, so a
  slow or endless server cannot hold or exhaust the worker;
- only textual media types are accepted; the text is decoded with replacement (never raises).
"""

import hashlib
import html.parser
import re
import socket
import urllib.error
import urllib.parse
import urllib.request

WORKER_SPECIES = "wrk.web.fetcher"
CAPABILITY = "cap.web.fetch"

ALLOWED_HOST = "127.0.0.1"
DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
USER_AGENT = "wcp-hall-web-fetcher/1"

TEXT_TYPES = {"application/json", "application/xml", "application/xhtml+xml",
              "application/javascript", "application/x-ndjson"}
HTML_TYPES = {"text/html", "application/xhtml+xml"}


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


def check_url(url):
    """Returns ``(origin, url)`` for an acceptable URL or raises BadRequest("url_not_allowed")."""

    def refuse(why):
        raise BadRequest("url_not_allowed",
                         "url %r %s; only http://127.0.0.1[:port]/path is allowed" % (url[:200], why))

    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        refuse("contains whitespace or control characters")
    if not url.isascii():
        refuse("contains non-ASCII characters (percent-encode them)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        refuse("cannot be parsed (%s)" % exc)
    if parts.scheme != "http":
        refuse("does not use the http scheme")
    if "@" in parts.netloc:
        refuse("contains user information")
    host, sep, port_text = parts.netloc.rpartition(":")
    if not sep:
        host = parts.netloc
    elif not port_text.isdigit() or len(port_text) > 5:
        refuse("has a malformed port")
    if host != ALLOWED_HOST:
        refuse("is not on host %s" % ALLOWED_HOST)
    if port == 0:
        refuse("has port 0")
    if parts.fragment:
        url = urllib.parse.urlunsplit(parts._replace(fragment=""))
    return ("http", ALLOWED_HOST, port or 80), url


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, origin):
        super().__init__()
        self.origin = origin

    def _check(self, newurl):
        try:
            origin, _ = check_url(newurl)
        except BadRequest as exc:
            raise WorkFailed("redirect_refused",
                             "the server redirected to a URL that is not allowed: %s" % exc) from None
        if origin != self.origin:
            raise WorkFailed("redirect_refused",
                             "the server redirected to another origin (%s:%d); only same-origin "
                             "redirects are followed" % (origin[1], origin[2]))

    def http_error_302(self, req, fp, code, msg, headers):
        # Checked here, before urllib's own scheme check, so every refused target gets the
        # same error code.
        location = headers.get("location") or headers.get("uri")
        if location:
            self._check(urllib.parse.urljoin(req.full_url, location))
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self._check(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def is_text_type(media_type):
    return (media_type.startswith("text/") or media_type in TEXT_TYPES
            or media_type.endswith("+json") or media_type.endswith("+xml"))


class _TextExtractor(html.parser.HTMLParser):
    """Visible text of an HTML document: paragraphs for block elements, no scripts or styles."""

    SKIP = {"script", "style", "noscript", "template", "svg", "head"}
    BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
             "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "dl", "dt", "dd", "table",
             "tr", "pre", "blockquote", "figure", "figcaption", "hr", "form", "fieldset",
             "address", "details", "summary"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.title = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag, attrs):
        if tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_text(markup):
    """``(title or None, text)``: visible text with blank lines between blocks."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join("".join(parser.title).split()) or None
    return title, text


def decode_body(body, media_type, charset):
    """``(title, text, charset used)``; undecodable bytes become U+FFFD."""
    used = (charset or "utf-8").lower()
    try:
        "".encode(used)
        text = body.decode(used, errors="replace")
    except LookupError:
        used = "utf-8"
        text = body.decode(used, errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    if media_type in HTML_TYPES:
        title, text = html_to_text(text)
        return title, text, used
    return None, text, used


def fetch(url, max_bytes=DEFAULT_MAX_BYTES, timeout=DEFAULT_TIMEOUT_SECONDS, traceparent=None,
          log=None):
    """Fetches ``url`` (already checked by :func:`check_url`) and returns the result dict."""
    origin, url = check_url(url)
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler({}), urllib.request.HTTPHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
                    _SameOriginRedirects(origin)):
        opener.add_handler(handler)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
               "Accept": "text/*, application/json;q=0.9, application/xml;q=0.9, */*;q=0.1"}
    if traceparent:
        headers["traceparent"] = traceparent
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with opener.open(request, timeout=timeout) as resp:
            status = resp.status
            final_url = resp.geturl()
            media_type = resp.headers.get_content_type()
            charset = resp.headers.get_content_charset()
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise WorkFailed("response_too_large",
                                 "the server announced %s bytes, more than max_bytes=%d"
                                 % (declared, max_bytes))
            if not is_text_type(media_type):
                raise WorkFailed("unsupported_content_type",
                                 "the server sent %s; only text/*, JSON and XML documents are "
                                 "fetched" % media_type)
            body = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise WorkFailed("http_status", "the server answered HTTP %d (%s) for %s"
                         % (exc.code, exc.reason, url)) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise WorkFailed("fetch_timeout", "no answer from %s within %gs" % (url, timeout)) from None
        if isinstance(reason, PermissionError):
            # EACCES/EPERM on connect: the sandbox (Landlock/seccomp) refused the destination.
            raise WorkFailed("egress_denied",
                             "connecting to %s:%d was refused by the sandbox (%s): the worker's "
                             "privilege envelope does not allow this destination"
                             % (origin[1], origin[2], reason)) from None
        raise WorkFailed("fetch_failed", "could not fetch %s: %s" % (url, reason)) from None
    except (socket.timeout, TimeoutError):
        raise WorkFailed("fetch_timeout", "no answer from %s within %gs" % (url, timeout)) from None
    except (OSError, ValueError) as exc:  # http.client errors (bad status line, reset) are here
        raise WorkFailed("fetch_failed", "could not fetch %s: %s" % (url, exc)) from None
    if len(body) > max_bytes:
        raise WorkFailed("response_too_large", "the body is larger than max_bytes=%d" % max_bytes)
    title, text, used = decode_body(body, media_type, charset)
    if log:
        log("info", "fetched", url=final_url, status=status, bytes=len(body), content_type=media_type)
    return {
        "url": final_url,
        "status": status,
        "content_type": media_type,
        "charset": used,
        "title": title,
        "text": text,
        "bytes": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }


def run(request, ctx):
    """``{"url", "max_bytes"?, "timeout_seconds"?}`` -> the fetched document (see README)."""
    return fetch(request["url"],
                 max_bytes=request.get("max_bytes", DEFAULT_MAX_BYTES),
                 timeout=request.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
                 traceparent=ctx.traceparent,
                 log=ctx.log)
