"""Unit tests of doc_chunker (stdlib unittest)."""

import io
import json
import os
import random
import sys
import unittest

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(PACKAGE, "code"))

import bootstrap  # noqa: E402
import worker_logic as wl  # noqa: E402


def ctx():
    return bootstrap.Context("cid-chunk", worker=wl.WORKER_SPECIES, stream=io.StringIO())


def texts(spans, text):
    return [text[s:e] for s, e in spans]


WORDS = ["alpha", "beta", "gamma", "delta", "Hall", "worker", "receipt", "x" * 30, "é", "中文"]


def random_document(rng):
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        sentences = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 40))]
            sentences.append(" ".join(words) + rng.choice([".", "!", "?", ".\u201d", "\u2026", ""]))
        paragraphs.append(rng.choice([" ", "  ", "\n"]).join(sentences))
    return rng.choice(["", "\n", "  "]) + rng.choice(["\n\n", "\r\n\r\n", "\n \n\n"]).join(paragraphs)


class Invariants(unittest.TestCase):
    def check(self, text, max_chars, overlap):
        spans = wl.chunk(text, max_chars, overlap)
        for s, e in spans:
            piece = text[s:e]
            self.assertTrue(piece, "empty chunk")
            self.assertLessEqual(e - s, max_chars)
            self.assertEqual(piece, piece.strip(), "chunk has surrounding whitespace")
        for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
            self.assertLess(s1, s2, "starts must increase")
            self.assertLess(e1, e2, "ends must increase")
            if overlap == 0:
                self.assertLessEqual(e1, s2, "no overlap requested")
            else:
                self.assertLessEqual(e1 - s2, overlap, "overlap larger than requested")
        covered = set()
        for s, e in spans:
            covered.update(range(s, e))
        missing = [i for i, c in enumerate(text) if not c.isspace() and i not in covered]
        self.assertEqual(missing, [], "characters not in any chunk")
        return spans

    def test_random_documents(self):
        rng = random.Random(8)
        for n in range(300):
            text = random_document(rng)
            max_chars = rng.choice([50, 80, 200, 1000])
            overlap = rng.choice([0, 0, 10, 40, max_chars - 1])
            with self.subTest(n=n, max_chars=max_chars, overlap=overlap):
                self.check(text, max_chars, overlap)

    def test_deterministic(self):
        text = random_document(random.Random(1))
        self.assertEqual(wl.chunk(text, 120, 30), wl.chunk(text, 120, 30))


class Boundaries(unittest.TestCase):
    def test_short_document_is_one_chunk(self):
        self.assertEqual(texts(wl.chunk("  One. Two.  ", 100), "  One. Two.  "), ["One. Two."])

    def test_paragraph_boundary_is_preferred_when_half_full(self):
        text = "A" * 30 + ".\n\n" + "B" * 30 + "."
        self.assertEqual(texts(wl.chunk(text, 60), text), ["A" * 30 + ".", "B" * 30 + "."])

    def test_small_paragraphs_are_packed_together(self):
        text = "One.\n\nTwo.\n\nThree."
        self.assertEqual(texts(wl.chunk(text, 100), text), [text])

    def test_sentences_are_not_cut(self):
        text = "First sentence here. Second sentence here! Third one? Yes."
        self.assertEqual(texts(wl.chunk(text, 45), text),
                         ["First sentence here. Second sentence here!", "Third one? Yes."])

    def test_closing_quotes_stay_with_their_sentence(self):
        text = 'He said "stop." Then he left.'
        self.assertEqual(texts(wl.sentences(text, 0, len(text)), text),
                         ['He said "stop."', "Then he left."])

    def test_dots_inside_identifiers_do_not_end_sentences(self):
        text = "Ask for cap.doc.chunk now. Done."
        self.assertEqual(texts(wl.sentences(text, 0, len(text)), text),
                         ["Ask for cap.doc.chunk now.", "Done."])

    def test_crlf_paragraphs(self):
        text = "First para.\r\n\r\nSecond para."
        self.assertEqual(texts(wl.paragraphs(text), text), ["First para.", "Second para."])

    def test_long_sentence_is_cut_at_whitespace(self):
        text = " ".join(["word"] * 30)  # 149 characters, no sentence end
        chunks = texts(wl.chunk(text, 50), text)
        self.assertTrue(all(len(c) <= 50 for c in chunks))
        self.assertTrue(all(c.split() == ["word"] * len(c.split()) for c in chunks), chunks)
        self.assertEqual(" ".join(chunks), text)

    def test_overlong_word_is_cut_hard(self):
        text = "z" * 120
        self.assertEqual(texts(wl.chunk(text, 50), text), ["z" * 50, "z" * 50, "z" * 20])

    def test_overlap_repeats_whole_trailing_sentences(self):
        text = "Aaaa aaaa. Bbbb bbbb. Cccc cccc. Dddd dddd."
        chunks = texts(wl.chunk(text, 25, 12), text)
        self.assertEqual(chunks, ["Aaaa aaaa. Bbbb bbbb.", "Bbbb bbbb. Cccc cccc.",
                                  "Cccc cccc. Dddd dddd."])

    def test_overlap_never_repeats_a_whole_chunk(self):
        text = "Aaaa. Bbbb. Cccc."
        spans = wl.chunk(text, 6, 5)
        self.assertEqual(texts(spans, text), ["Aaaa.", "Bbbb.", "Cccc."])

    def test_unicode_offsets_are_code_points(self):
        text = "Ünïcödé ✓ text. 中文句子。\n\nNext."
        out = wl.run({"text": text, "max_chars": 50}, ctx())
        for chunk, span in zip(out["chunks"], out["spans"]):
            self.assertEqual(text[span["start"]:span["end"]], chunk)


class Run(unittest.TestCase):
    def test_result_shape(self):
        out = wl.run({"text": "One. Two.\n\nThree."}, ctx())
        self.assertEqual(out, {"chunks": ["One. Two.\n\nThree."], "spans": [{"start": 0, "end": 17}],
                               "count": 1, "max_chars": 1000, "overlap": 0})

    def test_blank_text_is_a_bad_request(self):
        with self.assertRaises(wl.BadRequest) as cm:
            wl.run({"text": " \n\t "}, ctx())
        self.assertEqual(cm.exception.code, "empty_document")

    def test_overlap_must_be_below_max_chars(self):
        with self.assertRaises(wl.BadRequest):
            wl.run({"text": "x", "max_chars": 50, "overlap": 50}, ctx())

    def test_example_request(self):
        with open(os.path.join(PACKAGE, "config.schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        with open(os.path.join(PACKAGE, "example.request.json"), encoding="utf-8") as f:
            request = bootstrap.validate(json.load(f), schema)
        out = wl.run(request, ctx())
        self.assertEqual(out["count"], 2)
        self.assertTrue(out["chunks"][1].startswith("Every dispatch"))

    def test_schema_rejects(self):
        with open(os.path.join(PACKAGE, "config.schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        for bad in [{}, {"text": ""}, {"text": 1}, {"text": "x", "max_chars": 10},
                    {"text": "x", "overlap": -1}, {"text": "x", "chunks": []}]:
            with self.subTest(bad=bad):
                with self.assertRaises(bootstrap.ProtocolError):
                    bootstrap.validate(bad, schema)


if __name__ == "__main__":
    unittest.main()
