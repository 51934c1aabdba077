"""Unit tests of doc_hasher (stdlib unittest)."""

import hashlib
import io
import json
import os
import sys
import unittest

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic as wl  # noqa: E402


def ctx():
    return bootstrap.Context("cid-hash", worker=wl.WORKER_SPECIES, stream=io.StringIO())


# The Certificate Transparency reference test vectors (RFC 6962 Merkle Tree Hash): the roots of
# the first n of these eight leaves.
CT_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             b"\x50\x51\x52\x53\x54\x55\x56\x57",
             b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


class Merkle(unittest.TestCase):
    def test_certificate_transparency_vectors(self):
        for n, expected in enumerate(CT_ROOTS, start=1):
            with self.subTest(leaves=n):
                self.assertEqual(wl.merkle_root(CT_LEAVES[:n]).hex(), expected)

    def test_empty_tree(self):
        self.assertEqual(wl.merkle_root([]).hex(), hashlib.sha256(b"").hexdigest())

    def test_order_and_content_matter(self):
        a = wl.merkle_root([b"a", b"b", b"c"])
        self.assertNotEqual(a, wl.merkle_root([b"b", b"a", b"c"]))
        self.assertNotEqual(a, wl.merkle_root([b"a", b"b", b"c", b"c"]))  # no duplication trick
        self.assertNotEqual(a, wl.merkle_root([b"a", b"bc"]))

    def test_a_leaf_is_not_an_inner_node(self):
        left, right = wl.merkle_root([b"x"]), wl.merkle_root([b"y"])
        self.assertNotEqual(wl.merkle_root([b"x", b"y"]), wl.merkle_root([b"\x01" + left + right]))


class Run(unittest.TestCase):
    def test_digests(self):
        text = "Zoë's doc.\n\nSecond."
        out = wl.run({"text": text, "chunks": ["Zoë's doc.", "Second."]}, ctx())
        self.assertEqual(out["document_sha256"], hashlib.sha256(text.encode()).hexdigest())
        self.assertEqual(out["document_bytes"], len(text.encode()))
        self.assertEqual(out["chunk_sha256"], [hashlib.sha256("Zoë's doc.".encode()).hexdigest(),
                                               hashlib.sha256(b"Second.").hexdigest()])
        self.assertEqual(out["merkle_root"],
                         wl.merkle_root(["Zoë's doc.".encode(), b"Second."]).hex())
        self.assertEqual((out["merkle_method"], out["chunk_count"]), ("rfc6962-sha256", 2))

    def test_known_document_hash(self):
        # printf 'abc' | sha256sum
        self.assertEqual(wl.run({"text": "abc"}, ctx())["document_sha256"],
                         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")

    def test_without_chunks(self):
        out = wl.run({"text": ""}, ctx())
        self.assertEqual((out["chunk_sha256"], out["chunk_count"]), ([], 0))
        self.assertEqual(out["merkle_root"], hashlib.sha256(b"").hexdigest())

    def test_example_request_and_schema(self):
        with open(os.path.join(PACKAGE, "config.schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        with open(os.path.join(PACKAGE, "example.request.json"), encoding="utf-8") as f:
            request = bootstrap.validate(json.load(f), schema)
        self.assertEqual(wl.run(request, ctx())["chunk_count"], 2)
        for bad in [{}, {"text": 1}, {"text": "x", "chunks": "x"}, {"text": "x", "chunks": [None]},
                    {"text": "x", "extra": True}]:
            with self.subTest(bad=bad):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate(bad, schema)


if __name__ == "__main__":
    unittest.main()
