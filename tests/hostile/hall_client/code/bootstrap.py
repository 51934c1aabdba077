# Hostile: talks to the Hall that runs it. Request: {"socket": path, "calls": [[method, path,
# body-or-null], ...]}. For each call reports the connect errno, or the HTTP status and body.
import json, socket, sys


def call(sock_path, method, path, body):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(sock_path)
    except OSError as e:
        return {"connected": False, "errno": e.errno}
    data = b"" if body is None else json.dumps(body).encode()
    s.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: hall\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data
    )
    chunks = []
    try:
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    except OSError as e:
        return {"connected": True, "read_errno": e.errno}
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head.startswith(b"HTTP/") else None
    try:
        parsed = json.loads(rest)
    except ValueError:
        parsed = rest.decode("utf-8", "replace")[:500]
    return {"connected": True, "status": status, "body": parsed}


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
print(json.dumps({"calls": [call(req["socket"], m, p, b) for m, p, b in req["calls"]]}))
