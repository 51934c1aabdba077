#!/usr/bin/env python3
"""PyHall 0.3.0's canonical_package_hash, re-implemented from its specification
(shared/reference/pyhall-spec.md §4) so benches/attest.rs can time it on the same trees in the
same run (PyHall itself is not installed here).

Semantics kept on purpose, including the unsafe ones the Hall refuses: Path.rglob("*") over
the whole tree, the Path objects sorted (component-wise), directories skipped with is_dir()
(which follows links), a file skipped if any part of its *absolute* path is an excluded name or
its relative POSIX path ends with ".pyc", content read with read_bytes() (following links),
one record "{rel}\\n{len}\\n{sha256hex}\\n" per file, SHA-256 of the UTF-8 concatenation.

Usage: pyhall_hash.py ROOT [--repeat N]
Prints one JSON object: {"digest": ..., "samples_s": [...], "median_s": ...}; only the call of
the hash function is timed (not interpreter start-up).
"""

import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

EXCLUDED = frozenset(
    {".git", "__pycache__", ".DS_Store", "manifest.json", "manifest.sig", "manifest.tmp"}
)


def canonical_package_hash(root: Path) -> str:
    records = []
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(root).as_posix()
        if any(part in EXCLUDED for part in path.parts) or path.name in EXCLUDED:
            continue
        if rel.endswith(".pyc"):
            continue
        data = path.read_bytes()
        records.append(f"{rel}\n{len(data)}\n{hashlib.sha256(data).hexdigest()}\n")
    return hashlib.sha256("".join(records).encode("utf-8")).hexdigest()


def main() -> None:
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    root = Path(args[0])
    repeat = 1
    if len(args) == 3 and args[1] == "--repeat":
        repeat = int(args[2])
    samples = []
    digest = None
    for _ in range(repeat):
        start = time.perf_counter()
        digest = canonical_package_hash(root)
        samples.append(time.perf_counter() - start)
    print(json.dumps({"digest": digest, "samples_s": samples, "median_s": statistics.median(samples)}))


if __name__ == "__main__":
    main()
