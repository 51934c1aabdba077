"""Unit tests of embedder (stdlib unittest)."""

import io
import json
import math
import os
import sys
import unittest

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic as wl  # noqa: E402


def ctx():
    return bootstrap.Context("cid-embed", worker=wl.WORKER_SPECIES, stream=io.StringIO())


class Method(unittest.TestCase):
    def test_tokens_and_features(self):
        self.assertEqual(wl.tokens("Hello, World! snake_case ÄBC 42"),
                         ["hello", "world", "snake", "case", "äbc", "42"])
        self.assertEqual(wl.features("Hello world"), ["w:hello", "w:world", "b:hello world"])
        self.assertEqual(wl.features("..."), [])

    def test_buckets_match_an_independent_sha256(self):
        # Computed with coreutils: printf '%s' FEATURE | sha256sum; dimension = first 4 bytes
        # big-endian mod 64, sign from the low bit of byte 5.
        self.assertEqual(wl.bucket("w:hello"), (20, 1))    # b279e894 f8...
        self.assertEqual(wl.bucket("w:world"), (42, 1))    # 0d0bd4ea c6...
        self.assertEqual(wl.bucket("b:hello world"), (5, -1))  # 9ac726c5 db...

    def test_golden_vector(self):
        v = wl.embed("Hello world")
        expected = [0.0] * 64
        expected[5], expected[20], expected[42] = -0.57735, 0.57735, 0.57735
        self.assertEqual(v, expected)
        self.assertEqual(wl.embed("HELLO  world!"), expected)  # case and punctuation do not count

    def test_unit_length_and_rounding(self):
        v = wl.embed("The Hall routes capabilities to worker species under WCP rules.")
        self.assertEqual(len(v), 64)
        self.assertAlmostEqual(math.sqrt(sum(x * x for x in v)), 1.0, places=5)
        self.assertTrue(all(round(x, 6) == x for x in v))
        self.assertFalse(any(math.copysign(1.0, x) < 0 and x == 0 for x in v), "no -0.0")

    def test_repeated_features_add_up(self):
        # "a a": w:a twice and b:a a once; the vector is not the one of "a".
        self.assertNotEqual(wl.embed("a a"), wl.embed("a"))

    def test_empty_text_is_the_zero_vector(self):
        self.assertEqual(wl.embed(""), [0.0] * 64)
        self.assertEqual(wl.embed(" ,;- "), [0.0] * 64)

    def test_similar_texts_are_closer_than_unrelated_ones(self):
        a = wl.embed("The Hall routes capabilities to workers")
        b = wl.embed("the hall routes a capability to a worker")
        c = wl.embed("Bananas are a yellow fruit")
        self.assertGreater(wl.cosine(a, b), 0.5)
        self.assertGreater(wl.cosine(a, b), wl.cosine(a, c) + 0.3)
        self.assertAlmostEqual(wl.cosine(a, a), 1.0, places=5)

    def test_deterministic_across_calls(self):
        text = "Determinism: identical inputs give identical vectors."
        self.assertEqual(wl.embed(text), wl.embed(text))


class Run(unittest.TestCase):
    def test_result_shape_and_order(self):
        out = wl.run({"chunks": ["Hello world", "", "Other text"]}, ctx())
        self.assertEqual(out["dimensions"], 64)
        self.assertEqual(out["method"], "wcp-hall.feature-hash.v1")
        self.assertEqual(out["count"], 3)
        self.assertEqual(out["embeddings"][0], wl.embed("Hello world"))
        self.assertEqual(out["embeddings"][1], [0.0] * 64)
        self.assertEqual(out["embeddings"][2], wl.embed("Other text"))

    def test_result_is_plain_json(self):
        out = wl.run({"chunks": ["x y z"]}, ctx())
        self.assertEqual(json.loads(json.dumps(out, allow_nan=False)), out)

    def test_example_request_and_schema(self):
        with open(os.path.join(PACKAGE, "config.schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        with open(os.path.join(PACKAGE, "example.request.json"), encoding="utf-8") as f:
            request = bootstrap.validate(json.load(f), schema)
        self.assertEqual(wl.run(request, ctx())["count"], 2)
        for bad in [{}, {"chunks": []}, {"chunks": "text"}, {"chunks": [1]},
                    {"chunks": ["x" * 20001]}, {"chunks": ["x"] * 1001}, {"chunks": ["x"], "dims": 8}]:
            with self.subTest(bad=str(bad)[:40]):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate(bad, schema)


if __name__ == "__main__":
    unittest.main()
