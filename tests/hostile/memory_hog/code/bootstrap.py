# Hostile: allocates without bound.
import json

hoard = []
try:
    while True:
        hoard.append(bytearray(16 << 20))
except MemoryError:
    n = len(hoard)
    hoard = None
    print(json.dumps({"memory_error": True, "allocated_mib": n * 16}))
