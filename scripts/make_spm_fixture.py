"""Writes the SentencePiece fixtures and goldens for the Go tokenizer's conformance tests.

Run from the repository root (needs Debian's python3-sentencepiece, 0.1.97; the
sentencepiece in the goldens is that one):

    /usr/bin/python3 scripts/make_spm_fixture.py [--primer DIR]

Outputs (committed; rerunning reproduces them byte for byte on the same sentencepiece):
- testdata/spm/tiny.model: a unigram model trained with niels-gpt generation 2's tokenizer
  settings (docs/ARCHITECTURE.md, The model): byte fallback, unk 0, <s> 1, </s> 2, the four
  special pieces as user-defined symbols 3..6, byte pieces 7..262, no dummy prefix, the
  nmt_nfkc normaliser with its precompiled charsmap, extra whitespace removed. Only the
  vocabulary size differs (1,000 instead of 16,000) so the file stays small. It is trained
  on the primer texts plus a few hundred generated mixed-script lines, so that it also
  holds pieces outside ASCII.
- testdata/spm/tiny_identity.model: a second, smaller unigram model that covers the other
  branches of the format: the identity normaliser (no charsmap), a dummy prefix, extra
  whitespace kept, no byte fallback (characters outside the vocabulary become <unk>).
- testdata/spm/<model>.encode.jsonl.gz: one JSON object per line, the conformance corpus:
  {"text": str} or {"hex": bytes} (inputs that are not valid UTF-8), "ids" from
  EncodeAsIds, "decoded" = DecodeIds(ids). Inputs: the primer's lines and dialogues, samples
  of many scripts and normalisation hazards, the special pieces in and out of context,
  random mixtures of all of these, random code points, invalid UTF-8, runs of one unit and
  long lines.
- testdata/spm/<model>.decode.jsonl.gz: {"ids": [...], "decoded": DecodeIds(ids)} for
  arbitrary id sequences: random ids, runs of byte pieces that form invalid UTF-8,
  control and unknown pieces, pieces that start with U+2581.

Everything random comes from one seeded generator, so the corpus is the same every run.
"""

import argparse
import gzip
import json
import os
import random
import sys
import tempfile

import sentencepiece as spm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "testdata", "spm")

SPECIALS = [f"<|ngpt_{role}_84a5023f67d74cf29cc4001becde983c|>" for role in ("sys", "usr", "asst", "eot")]

# Hand-written samples per script and per normalisation hazard. They feed both the
# training supplement and the corpus; each string names what it exercises.
SCRIPTS = {
    "latin": ["Crème brûlée à la façon de Zoë", "naïve coöperation, São Paulo, Łódź, Dvořák",
              "Straße, Æsir, Œuvre, ĳ, ŉ", "¿Qué tal? ¡Muy bien! «citation» „Zitat“"],
    "greek": ["Καλημέρα κόσμε", "ἀρχὴ ἥμισυ παντός", "Ελληνικά: α β γ δ ε ζ η θ"],
    "cyrillic": ["Привет, мир!", "Съешь же ещё этих мягких французских булок", "Ёлка, йод, Україна, Ђорђе"],
    "cjk": ["你好，世界。", "東京都は日本の首都です", "ひらがな カタカナ ｶﾀｶﾅ", "한국어 텍스트", "漢字かな混じり文"],
    "arabic": ["مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "سلام دنیا"],
    "indic": ["नमस्ते दुनिया", "हिन्दी भाषा", "ক্ষ্মী বাংলা", "தமிழ் மொழி", "สวัสดีชาวโลก"],
    "emoji": ["👋 hi 🙂", "👨‍👩‍👧‍👦 family", "🇩🇪🇫🇷🇯🇵 flags", "👍🏽 thumbs", "1️⃣ #️⃣ keycaps",
              "🏴󠁧󠁢󠁳󠁣󠁴󠁿 scotland", "❤️ ❤ ♥︎", "🧑🏿‍💻 coder"],
    # Decomposed forms: NFKC composes them, so the charsmap must be applied, not skipped.
    "combining": ["e\u0301cole", "Cafe\u0301", "n\u0303a\u0308o\u0300", "A\u030a\u0301ngstro\u0308m",
                  "\u1100\u1161\u11a8 jamo", "Z\u0351\u0352\u0353alg\u0300\u0301\u0302o", "\u0915\u094d\u0937"],
    "fullwidth": ["ＡＢＣ１２３", "Ｈｅｌｌｏ，ｗｏｒｌｄ！", "ﾊﾟﾋﾟﾌﾟ", "（全角）"],
    "compat": ["ﬁnal ﬂow oﬀ", "x² + y³ = z⁴", "Ⅻ ⅷ ① ⑳", "㎏ ㍿ ㈱ ℡ ™", "½ ¼ ¾", "ℌ ℍ ℕ ℝ", "…‥"],
    "whitespace": ["a\tb", "a\u00a0b", "a\u3000b", "a     b", "  leading", "trailing   ",
                   "\t\ttabs\t", "a\u2002b\u2003c\u2009d", "zero\u200bwidth", "line\u2028sep\u2029para",
                   "nel\u0085x", "cr\r\nlf", "v\u000bf\u000cx", "ogham\u1680space", "\u202fnarrow\u205f"],
    "control": ["bell\u0007", "nul\u0000byte", "esc\u001b[0m", "del\u007f", "c1\u0080\u009f",
                "soft\u00adhyphen", "bom\ufeffmark", "zwj\u200dzwnj\u200c", "lrm\u200erlm\u200f",
                "\u0001\u0002\u0003", "var\ufe0fsel", "private\ue000use", "non\ufffechar\U0010ffff",
                "replacement\ufffd", "tag\U000e0041"],
    "spaces_symbol": ["▁already▁escaped", "▁", "▁▁▁", "a▁ b", "end▁", " ▁ "],
}


def special_cases():
    """The special pieces alone, inside text, next to each other, and broken."""
    s, u, a, e = SPECIALS
    cut = s[:-1]
    return [s, u, a, e, s + u + a + e, f"hi {s} there", f"x{u}y", f"  {a}  ", f"{e}\n{s}",
            f"text{e}", f"{s}{s}", cut, cut + ">", s.upper(), s.replace("|", "｜"),
            f"<|{s}|>", f"{s[:10]} {s[10:]}", f"\t{u}\t", s + "é" + u, "<|ngpt_sys_", "<|", "|>",
            f"user: hi{e}assistant:", "<s>", "</s>", "<unk>", "<0x41>", "<pad>"]


def repetitions(rng, words):
    """Runs of one unit (where Viterbi's ties must break as sentencepiece's do) and long
    lines of primer words."""
    units = ["a", "ab", "the ", ".", " ", "!?", "🙂", "é", "e\u0301", SPECIALS[0], "ss", "\t", "\u00a0",
             "ﬁ", "ｱ", "-", "0", "12", "اب", "日本"]
    out = [u * n for u in units for n in (2, 3, 5, 8, 13, 50, 300)]
    out += [" ".join(rng.choice(words) for _ in range(n)) for n in (200, 1000, 3000)]
    return out


def primer_lines(primer_dir):
    """Every distinct line of the primer texts, and each dialogue as one multi-line text."""
    lines, blocks = [], []
    for name in ("primer.txt", "primer.generated.txt"):
        with open(os.path.join(primer_dir, name), encoding="utf-8") as f:
            text = f.read()
        lines.extend(text.split("\n"))
        blocks.extend(b.strip("\n") for b in text.split("<dialogue>"))
    return list(dict.fromkeys(lines)), list(dict.fromkeys(blocks))


# Code point ranges for random strings: ASCII, Latin-1 and its controls, combining marks,
# several scripts, compatibility blocks that NFKC rewrites, emoji, and the whole plane.
RANGES = [(0x00, 0x7F), (0x80, 0xFF), (0x100, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF),
          (0x590, 0x6FF), (0x900, 0x97F), (0x1100, 0x11FF), (0x1E00, 0x1EFF), (0x2000, 0x206F),
          (0x2070, 0x218F), (0x2460, 0x24FF), (0x3000, 0x30FF), (0x3200, 0x33FF), (0x4E00, 0x4FFF),
          (0xAC00, 0xAD00), (0xF900, 0xFAFF), (0xFB00, 0xFB4F), (0xFE00, 0xFE6F), (0xFF00, 0xFFEF),
          (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x1F1E6, 0x1F1FF), (0xE0000, 0xE007F),
          (0x0, 0x10FFFF)]


def random_codepoints(rng, n):
    out = []
    while len(out) < n:
        lo, hi = rng.choice(RANGES)
        c = rng.randint(lo, hi)
        if 0xD800 <= c <= 0xDFFF:  # surrogates cannot be encoded as UTF-8
            continue
        out.append(chr(c))
    return "".join(out)


def generated_lines(rng, words, count):
    """Random mixtures: words, script samples, whitespace, controls and special pieces."""
    pool = [x for samples in SCRIPTS.values() for x in samples] + special_cases()
    seps = [" ", "  ", "\t", "\n", "", "\u00a0", "\u3000", " \n ", "\r\n"]
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(1, 8)):
            kind = rng.random()
            if kind < 0.45:
                parts.append(rng.choice(words))
            elif kind < 0.8:
                parts.append(rng.choice(pool))
            elif kind < 0.9:
                parts.append(random_codepoints(rng, rng.randint(1, 6)))
            else:
                parts.append(rng.choice(SPECIALS))
        text = ""
        for p in parts:
            text += p + rng.choice(seps)
        out.append(text)
    return out


def invalid_utf8(rng, words, count):
    """Byte strings that are not UTF-8: sentencepiece turns each bad byte into U+FFFD."""
    bad = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80",
           b"\xbf\xbf", b"\xf0\x9f\x98", b"\xc3", b"\xe0\x80\x80", b"\xf8\x88\x80\x80\x80"]
    out = []
    for _ in range(count):
        b = b""
        for _ in range(rng.randint(1, 5)):
            b += rng.choice(bad) if rng.random() < 0.5 else rng.choice(words).encode()
            b += rng.choice([b"", b" ", b"\t"])
        out.append(b)
    return out


def training_supplement(rng):
    """Mixed-script lines added to the primer for training, so the vocabulary has pieces
    outside ASCII (and Viterbi has real choices there too)."""
    samples = [x for k in ("latin", "greek", "cyrillic", "cjk", "arabic", "indic", "emoji", "fullwidth")
               for x in SCRIPTS[k]]
    return [" ".join(rng.choice(samples) for _ in range(rng.randint(2, 5))) for _ in range(400)]


def train(name, corpus_lines, **settings):
    """Trains OUT/<name>.model. The model records its input and prefix paths, so both are
    relative names inside a scratch folder: the file then does not depend on where it ran."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            with open("corpus.txt", "w", encoding="utf-8") as f:
                f.write("\n".join(corpus_lines) + "\n")
            spm.SentencePieceTrainer.train(
                input="corpus.txt", model_prefix=name, model_type="unigram", unk_id=0, bos_id=1, eos_id=2,
                pad_id=-1, user_defined_symbols=SPECIALS, num_threads=1, minloglevel=2, **settings)
            os.replace(name + ".model", os.path.join(OUT, name + ".model"))
        finally:
            os.chdir(here)


def write_jsonl_gz(path, rows):
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    with open(path, "wb") as f:
        # mtime=0 keeps the file byte-identical between runs.
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)


def encode_rows(sp, inputs):
    rows = []
    for x in inputs:
        ids = sp.EncodeAsIds(x)
        row = {"hex": x.hex()} if isinstance(x, bytes) else {"text": x}
        row["ids"] = ids
        row["decoded"] = sp.DecodeIds(ids)
        rows.append(row)
    return rows


def decode_cases(sp, rng, count):
    """Arbitrary id sequences, weighted towards what decoding treats specially."""
    n = sp.GetPieceSize()
    byte_ids = [i for i in range(n) if sp.IsByte(i)]
    special = [i for i in range(n) if sp.IsControl(i) or sp.IsUnknown(i) or sp.IsUnused(i)]
    special += [sp.PieceToId(s) for s in SPECIALS if sp.PieceToId(s) != sp.unk_id()]
    space_led = [i for i in range(n) if sp.IdToPiece(i).startswith("▁")]
    cases = [[], [0], [1], [2], [1, 2]]
    for _ in range(count):
        length = rng.randint(1, 24)
        kind = rng.random()
        ids = []
        for _ in range(length):
            r = rng.random()
            if byte_ids and (r < 0.35 or (kind < 0.3 and r < 0.9)):
                ids.append(rng.choice(byte_ids))
            elif r < 0.5 and special:
                ids.append(rng.choice(special))
            elif r < 0.65 and space_led:
                ids.append(rng.choice(space_led))
            else:
                ids.append(rng.randrange(n))
        cases.append(ids)
    return [{"ids": ids, "decoded": sp.DecodeIds(ids)} for ids in cases]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--primer", default=os.path.join(os.path.dirname(REPO), "shared", "data"),
                    help="folder holding primer.txt and primer.generated.txt")
    args = ap.parse_args()
    if spm.__version__ != "0.1.97":
        print(f"warning: sentencepiece {spm.__version__}; the committed goldens come from 0.1.97", file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20251217)

    lines, blocks = primer_lines(args.primer)
    train("tiny", lines + training_supplement(rng), vocab_size=1000, byte_fallback=True,
          add_dummy_prefix=False, normalization_rule_name="nmt_nfkc", remove_extra_whitespaces=True)
    train("tiny_identity", lines + training_supplement(rng), vocab_size=400,
          byte_fallback=False, add_dummy_prefix=True, normalization_rule_name="identity",
          remove_extra_whitespaces=False, character_coverage=0.98)

    words = sorted({w for line in lines for w in line.split()})
    hazards = [x for samples in SCRIPTS.values() for x in samples] + special_cases()
    inputs = ["", " ", "\n", "\t \n"] + lines + blocks + hazards
    inputs += generated_lines(rng, words, 3000)
    inputs += [random_codepoints(rng, rng.randint(1, 24)) for _ in range(1500)]
    inputs += invalid_utf8(rng, words, 300)
    inputs += repetitions(rng, words)

    for name in ("tiny", "tiny_identity"):
        sp = spm.SentencePieceProcessor(model_file=os.path.join(OUT, name + ".model"))
        write_jsonl_gz(os.path.join(OUT, name + ".encode.jsonl.gz"), encode_rows(sp, inputs))
        write_jsonl_gz(os.path.join(OUT, name + ".decode.jsonl.gz"), decode_cases(sp, rng, 2000))
        print(f"{name}: {sp.GetPieceSize()} pieces, {len(inputs)} encode lines")


if __name__ == "__main__":
    main()
