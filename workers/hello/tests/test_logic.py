"""Unit tests of hello's logic and of its request schema (stdlib unittest)."""

import io
import json
import os
import sys
import unittest

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic  # noqa: E402


def ctx():
    return bootstrap.Context("test-cid", worker=worker_logic.WORKER_SPECIES, stream=io.StringIO())


def load(name):
    with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
        return json.load(f)


class Greeting(unittest.TestCase):
    def test_greets_by_name(self):
        self.assertEqual(worker_logic.run({"name": "Ada"}, ctx()), {"greeting": "Hello, Ada!"})

    def test_whitespace_is_collapsed(self):
        self.assertEqual(worker_logic.greet("  Ada \t Lovelace "), "Hello, Ada Lovelace!")

    def test_unicode_names_are_kept(self):
        self.assertEqual(worker_logic.greet("Zoë"), "Hello, Zoë!")

    def test_blank_name_is_a_bad_request(self):
        with self.assertRaises(worker_logic.BadRequest) as cm:
            worker_logic.greet("   ")
        self.assertEqual(cm.exception.code, "invalid_request")


class Schema(unittest.TestCase):
    def setUp(self):
        self.schema = load("config.schema.json")

    def test_example_request_is_valid_and_runs(self):
        request = bootstrap.validate(load("example.request.json"), self.schema)
        self.assertEqual(worker_logic.run(request, ctx())["greeting"], "Hello, Ada!")

    def test_rejects(self):
        for bad, needle in [
            ({}, "name is required"),
            ({"name": ""}, "at least 1"),
            ({"name": 7}, "must be string"),
            ({"name": "x" * 101}, "at most 100"),
            ({"name": "a\u0007b"}, "pattern"),
            ({"name": "Ada", "extra": 1}, "not a known field"),
        ]:
            with self.subTest(bad=bad):
                with self.assertRaises(bootstrap.ProtocolError) as cm:
                    bootstrap.validate(bad, self.schema)
                self.assertEqual(cm.exception.code, "invalid_request")
                self.assertIn(needle, cm.exception.message)


if __name__ == "__main__":
    unittest.main()
