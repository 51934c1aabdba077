# Hostile: looks for secrets in its environment and prints everything it finds.
import json, os

print(json.dumps({"environ": dict(os.environ)}))
