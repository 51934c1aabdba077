# Hostile: attacks other processes and the kernel. Request: {"target": pid or null}.
import ctypes, json, os, signal, sys, time

libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
CLONE_NEWUSER = 0x10000000


def call(fn, *args):
    ctypes.set_errno(0)
    r = fn(*args)
    return {"ok": r == 0, "errno": ctypes.get_errno() if r != 0 else 0}


def attempt(fn):
    try:
        fn()
        return {"ok": True}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": type(e).__name__}


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
buf = ctypes.create_string_buffer(8)
local = IoVec(ctypes.cast(buf, ctypes.c_void_p), 8)
remote = IoVec(0x400000, 8)
out = {
    "ptrace_own_child": call(libc.ptrace, PTRACE_ATTACH, child, None, None),
    "ptrace_init": call(libc.ptrace, PTRACE_ATTACH, os.getppid(), None, None),
    "process_vm_readv": call(libc.process_vm_readv, child, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0),
    "unshare_user": call(libc.unshare, CLONE_NEWUSER),
    "mount": call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None),
}
if req.get("target"):
    t = req["target"]
    out["ptrace_target"] = call(libc.ptrace, PTRACE_ATTACH, t, None, None)
    out["kill_target"] = attempt(lambda: os.kill(t, signal.SIGTERM))
os.kill(child, signal.SIGKILL)
os.wait()
print(json.dumps(out))
