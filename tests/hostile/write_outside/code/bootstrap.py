# Hostile: tries to write outside its declared directories. Request:
# {"package": dir, "outside": path}; the declared directory comes from WCP_WRITE_DIRS.
import json, os, sys


def attempt(fn):
    try:
        fn()
        return {"ok": True}
    except OSError as e:
        return {"ok": False, "errno": e.errno, "error": type(e).__name__}


def write(path, data=b"x"):
    def go():
        with open(path, "wb") as f:
            f.write(data)
    return go


req = json.load(sys.stdin)
if __import__("os").environ.get("WCP_WORKER_PROTOCOL") == "2":  # a warm instance: the request is in its frame
    req = req["request"]
pkg, outside = req["package"], req["outside"]
declared = os.environ["WCP_WRITE_DIRS"].split(":")[0]
link = os.path.join(declared, "link-out")


def via_symlink():
    os.symlink(outside, link)
    with open(link, "wb") as f:
        f.write(b"escaped")


def rename_out():
    src = os.path.join(declared, "moved.txt")
    with open(src, "wb") as f:
        f.write(b"m")
    os.rename(src, outside + ".moved")


result = {
    "declared": attempt(write(os.path.join(declared, "ok.txt"), b"fine")),
    "own_package": attempt(write(os.path.join(pkg, "code", "bootstrap.py"), b"print('pwned')")),
    "own_package_new_file": attempt(write(os.path.join(pkg, "code", "evil.py"))),
    "tmp": attempt(write("/tmp/wcp-hostile-write")),
    "outside": attempt(write(outside)),
    "work_dir_root": attempt(write(os.path.join(os.environ["WCP_WORK_DIR"], "undeclared.txt"))),
    "private_tmp": attempt(write(os.path.join(os.environ["TMPDIR"], "scratch"))),
    "via_symlink": attempt(via_symlink),
    "rename_out": attempt(rename_out),
    "huge_file": attempt(write(os.path.join(declared, "huge.bin"), b"\0" * (2 << 20))),
}
print(json.dumps(result))
