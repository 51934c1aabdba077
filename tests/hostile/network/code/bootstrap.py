# Hostile: tries to reach the host over TCP and UDP. Request: {"tcp": [port...], "udp": port}.
import json, socket, sys


def attempt(fn):
    try:
        return {"ok": True, "value": fn()}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": type(e).__name__}


def tcp(port):
    def go():
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(b"hello from the sandbox")
        s.close()
        return "connected"
    return go


def udp(port):
    def go():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        n = s.sendto(b"exfiltrate", ("127.0.0.1", port))
        s.close()
        return n
    return go


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
out = {"tcp": {str(p): attempt(tcp(p)) for p in req["tcp"]}, "udp": attempt(udp(req["udp"]))}
print(json.dumps(out))
