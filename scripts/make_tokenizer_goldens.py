"""Make the golden token ids of synthesizer prompts (tests/data/tokenizer_goldens.json).

The instruction synthesizer was tuned (2024, transformers 4) with Mistral-7B-v0.1's tokenizer, whose
`tokenizer.json` runs the *legacy* sentencepiece pipeline: normalizer `Prepend("▁")` +
`Replace(" ", "▁")`, no pre-tokenizer. transformers 5 rebuilds Llama/Mistral tokenizers with a
`Metaspace` pre-tokenizer on load, which gives one token fewer at the start of every example. This
script pins what the model saw, once, with transformers 4.44:

- builds `LlamaTokenizerFast(vocab_file=SP_MODEL, legacy=True, from_slow=True, add_prefix_space=True)`
  from Mistral-7B-v0.1's sentencepiece model, which the PyPI package `mistral-common` (Apache-2.0)
  ships as `mistral_common/data/tokenizer.model.v1` (sha256 below), and saves it to
  `tests/data/mistral-7b-v0.1-tokenizer/` (tokenizer.json, tokenizer_config.json,
  special_tokens_map.json; the 0.5 MB tokenizer.model is not kept).
  `add_prefix_space=True` is needed: in 4.44 the fast class passes `add_prefix_space=None` on to the
  slow one it converts from, and the converter then drops the `Prepend("▁")` normalizer and the
  decoder's `Strip(" ", 1, 0)`. With it, the converted tokenizer.json has exactly the pipeline of
  the Hub's Mistral-7B-v0.1 tokenizer.json (checked below). The key is then removed from the saved
  tokenizer_config.json (the Hub's has none): a 4.x loader seeing it would insist on converting
  from the (absent) tokenizer.model instead of reading tokenizer.json.
- builds synthesizer prompts in the wire format (SPEC section 1, section 2) independently of
  ipt_data, and computes their ids part-wise: `<s>` and `</s>` are the special ids 1 and 2, and
  each text part between them is encoded with `add_special_tokens=False` and with special-token
  strings inside it (`<s>`, `</s>`, `<unk>` in a raw text) kept as plain text
  (`split_special_tokens=True`). A prompt with demos is, per demo `(text, pairs)`,
  `"<s>" + " <CON> " + text + " </CON>" + "\\n\\n" + "\\n\\n".join("<QUE> {q} <ANS> {a} </END>") + "</s>"`,
  followed by the current text's `"<s>" + " <CON> " + text + " </CON>" + "\\n\\n"`.
- cross-checks: for cases without special-token strings, the part-wise ids equal the fast
  tokenizer's, the slow `LlamaTokenizer(legacy=True)`'s and the `tokenizers` library's
  (reading the saved tokenizer.json) encoding of the whole prompt string; for all cases, the
  `tokenizers` library with `encode_special_tokens=True` part-wise, and the saved folder reloaded
  with 4.44's AutoTokenizer, reproduce the golden ids; SPEC's example
  `"<s> <CON> Hello world. </CON>\\n\\n"` gives `<s> ▁ ▁< CON > ▁Hello ▁world . ...`.
- decoding goldens: completions (pairs in the `<QUE> q <ANS> a </END>` format joined by "\\n\\n",
  some cut off) encoded three ways ("plain": `tok(completion)`, whose first token carries "▁";
  "cont": the tokens that follow "...</CON>\\n\\n" in an encoding of prompt end + completion,
  i.e. what the model emits, no leading "▁"; "sp": the lone "▁" token 28705 then "cont"), some
  with the eos id 2 appended, and the golden text `tok.decode(ids, skip_special_tokens=True)`.

Run it in a throwaway environment (transformers 4 must not become a dependency of ipt_data; no torch
needed; only PyPI is used):

    python3 -m venv /tmp/goldens-venv
    /tmp/goldens-venv/bin/pip install "transformers==4.44.2" sentencepiece protobuf
    pip download mistral-common --no-deps -d /tmp/mc        # mistral_common-1.13.1 was used
    cd /tmp/mc && unzip -o mistral_common-*.whl 'mistral_common/data/*'
    cd /work/main && /tmp/goldens-venv/bin/python scripts/make_tokenizer_goldens.py \\
        --sp-model /tmp/mc/mistral_common/data/tokenizer.model.v1

(the versions used: transformers 4.44.2, tokenizers 0.19.1, sentencepiece 0.2.x). The output is
deterministic (`random.Random(0)`); a rerun with the same versions rewrites identical files. This
script must not import ipt_data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import string
import sys
from pathlib import Path

SP_MODEL_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_TOK_DIR = REPO / "tests" / "data" / "mistral-7b-v0.1-tokenizer"
DEFAULT_OUT = REPO / "tests" / "data" / "tokenizer_goldens.json"
GENERATOR = "scripts/make_tokenizer_goldens.py"

BOS, EOS, UNK = 1, 2, 0
SPECIAL_STRINGS = ("<s>", "</s>", "<unk>")  # the tokenizer's special tokens

# ---------------------------------------------------------------------------------------------
# wire format (SPEC section 1 and 2), written here on purpose without ipt_data


def current_part(text: str) -> str:
    return " <CON> " + text + " </CON>" + "\n\n"


def demo_part(text: str, pairs: list[tuple[str, str]]) -> str:
    return current_part(text) + "\n\n".join(f"<QUE> {q} <ANS> {a} </END>" for q, a in pairs)


def prompt_string(text: str, demos: list[tuple[str, list[tuple[str, str]]]]) -> str:
    out = ""
    for dtext, pairs in demos:
        out += "<s>" + demo_part(dtext, pairs) + "</s>"
    return out + "<s>" + current_part(text)


def is_clean(text: str, demos) -> bool:
    strings = [text]
    for dtext, pairs in demos:
        strings.append(dtext)
        for q, a in pairs:
            strings += [q, a]
    return not any(s in x for x in strings for s in SPECIAL_STRINGS)


# ---------------------------------------------------------------------------------------------
# case material

PROSE = [
    "The river rose three feet overnight after the storm.",
    "Farmers in the valley had already moved their cattle to higher ground.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The committee approved the budget by a narrow margin of five votes.",
    "In 1869, the first transcontinental railroad in the United States was completed.",
    "She poured the tea, sat down by the window, and read the letter twice.",
    "Interest rates are expected to remain unchanged until the end of the quarter.",
    "A balanced diet includes fruits, vegetables, whole grains, and lean protein.",
    "The museum's new wing houses more than two hundred medieval manuscripts.",
    "Researchers observed that the mice slept longer when the room was kept dark.",
    "It's not clear whether the bridge will reopen before winter.",
    '"We can\'t wait any longer," the captain said, checking the horizon again.',
    "The software update fixes a bug that caused the app to crash on startup.",
    "Most volcanoes are found along the boundaries of tectonic plates.",
    "Patients receiving the drug reported fewer headaches than those on placebo.",
    "Despite the rain, thousands of runners finished the marathon.",
    "The author argues that cities should be designed for pedestrians, not cars.",
    "Mercury is the smallest planet in our solar system and the closest to the Sun.",
    "He couldn't remember where he'd left his keys -- again.",
    "The recipe calls for two cups of flour, one egg, and a pinch of salt.",
    "Q: Is this a question inside the text? A: Yes, and it is still plain prose.",
    "According to the report, exports grew by 4.5% year over year.",
    "The cat (a grey tabby named Miso) ignored everyone all afternoon.",
    "Their results; however, were not reproducible by independent labs.",
    "Why does ice float? Because it is less dense than liquid water!",
]

FEATURES: dict[str, list[str]] = {
    "bos": ["<s>", "a<s>b", "<s> starts like a prompt", "ends with <s>"],
    "eos": ["</s>", "end of text</s>", "</s> then more", "x</s><s>y"],
    "unk": ["<unk>", "an <unk> token", "<unk><unk>"],
    "inst": ["[INST] Summarize this. [/INST]", "[INST]", "[/INST] done", "<s>[INST] hi [/INST]"],
    "markup": [
        "<QUE> fake question <ANS> fake answer </END>",
        "<CON>",
        "</CON>",
        "<ANS>",
        "text <CON> nested </CON> text",
        "</END>",
        "<QUE>",
    ],
    "html": [
        '<div class="note"><p>Hello, <b>world</b>!</p></div>',
        "<br/>",
        "<s>struck</s>",
        '<a href="https://example.com/?q=1&amp;r=2">link</a>',
        "<!-- comment -->",
    ],
    "xml": [
        '<?xml version="1.0" encoding="UTF-8"?>\n<root a=\'1\'><item id="2"/></root>',
        "<![CDATA[ raw < data > ]]>",
    ],
    "lead_space": [" leading space", "   three leading spaces"],
    "trail_space": ["trailing space ", "trailing spaces   "],
    "double_space": ["two  spaces", "many     spaces  here"],
    "crlf": ["line one\r\nline two\r\n", "\r\n\r\nblank lines\r\n"],
    "tab": ["col1\tcol2\tcol3", "\tindented with a tab", "tab at end\t"],
    "nbsp": ["100\u00a0km", "\u00a0leading nbsp", "Mr.\u00a0Smith\u00a0\u00a0"],
    "emoji": ["I love it 😀🎉", "👍", "rocket🚀ship"],
    "zwj": ["👩\u200d💻 codes", "family 👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈 flag", "🇫🇷🇯🇵"],
    "cjk": ["中文测试，这是一个句子。", "日本語のテキストです。", "한국어 문장입니다.", "漢字かなカナ混じり"],
    "rtl": ["مرحبا بالعالم", "שלום עולם", "mixed English و عربي text", "\u200fRTL mark"],
    "combining": ["cafe\u0301", "n\u0303 and a\u0308", "Z\u0351\u0352a\u0353l\u0354g\u0355o", "café"],
    "digits": ["3.14159", "2024-06-01 12:30:45", "1,000,000 and 0.0001", "+1 (555) 123-4567"],
    "code": [
        "def f(x):\n    return x ** 2  # square\n",
        "for (int i = 0; i < n; ++i) { a[i] = 0; }",
        "SELECT * FROM t WHERE id = 1;",
        "```python\nprint('hi')\n```",
        "x => x * 2 // arrow",
    ],
    "unicode_misc": [
        "\u2581literal lower-one-eighth block",
        "zero\u200bwidth",
        "ideographic\u3000space",
        "<0x0A> literal",
        "\u00ad soft hyphen",
        "ﬁ ligature and Ⅻ numeral",
    ],
    "newlines": ["\nstarts with a newline", "ends with newlines\n\n", "a\n\n\n\nb", "\n"],
    "cot": ["Let's think step by step.", "Therefore, the answer is 42"],
    "options": ["Options:\n- yes\n- no\n- maybe"],
}


def prose(rng: random.Random, lo: int = 1, hi: int = 4) -> str:
    return " ".join(rng.choice(PROSE) for _ in range(rng.randint(lo, hi)))


def long_text(rng: random.Random) -> str:
    paras = []
    for _ in range(rng.randint(4, 12)):
        sents = [rng.choice(PROSE) for _ in range(rng.randint(3, 8))]
        paras.append(" ".join(sents) if rng.random() < 0.8 else "\n".join(sents))
    return "\n\n".join(paras)


def with_feature(rng: random.Random, feature: str) -> str:
    snippet = rng.choice(FEATURES[feature])
    where = rng.randrange(4)
    if where == 0:
        return snippet
    if where == 1:
        return snippet + " " + prose(rng, 1, 2)
    if where == 2:
        return prose(rng, 1, 2) + " " + snippet
    return prose(rng, 1, 2) + " " + snippet + " " + prose(rng, 1, 2)


def make_pair(rng: random.Random, feature: str | None) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        q, a = "What is the main topic of the text?", prose(rng, 1, 1)
    elif kind == 1:
        q = "Which statement is true?\nOptions:\n- " + "\n- ".join(rng.sample(PROSE, 3))
        a = rng.choice(PROSE)
    elif kind == 2:
        q = "Why did this happen?\nLet's think step by step."
        a = prose(rng, 1, 2) + "\nTherefore, the answer is " + rng.choice(["yes", "no", "42", "the river"])
    else:
        q, a = "Summarize the passage in one sentence.", prose(rng, 1, 2)
    if feature is not None and rng.random() < 0.6:
        snippet = rng.choice(FEATURES[feature])
        if rng.random() < 0.5:
            q = q + " " + snippet
        else:
            a = snippet + " " + a
    return q, a


def make_demos(rng: random.Random, n: int, feature: str | None, text_fn=None):
    demos = []
    for _ in range(n):
        if text_fn is not None:
            dtext = text_fn()
        elif feature is not None and rng.random() < 0.5:
            dtext = with_feature(rng, feature)
        else:
            dtext = prose(rng, 2, 5)
        pairs = [make_pair(rng, feature) for _ in range(rng.randint(1, 3))]
        demos.append((dtext, pairs))
    return demos


def build_cases() -> list[dict]:
    rng = random.Random(0)
    cases: list[tuple[str, str, list]] = []
    # 1. every feature, with 0, 1 and 2 demos
    for feature in FEATURES:
        for nd in range(3):
            cases.append((f"{feature}-{nd}d", with_feature(rng, feature), make_demos(rng, nd, feature)))
    # 2. every snippet alone as the whole text (boundary behaviour), demos rotating 0/1/2
    i = 0
    for feature, snippets in FEATURES.items():
        for j, snippet in enumerate(snippets):
            if feature in ("cot", "options"):
                continue
            cases.append((f"bare-{feature}-{j}-{i % 3}d", snippet, make_demos(rng, i % 3, None)))
            i += 1
    # 3. plain English prose
    for k in range(30):
        cases.append((f"prose-{k:02d}-{k % 3}d", prose(rng, 1, 6), make_demos(rng, k % 3, None)))
    # 4. long multi-paragraph texts (demos long too)
    for k in range(15):
        cases.append(
            (f"long-{k:02d}-{k % 3}d", long_text(rng), make_demos(rng, k % 3, None, text_fn=lambda: long_text(rng)))
        )
    # 5. 20,000-character words
    a_word = "a" * 20000
    rand_word = "".join(rng.choice(string.ascii_letters) for _ in range(20000))
    cases.append(("word20k-a-0d", a_word, []))
    cases.append(("word20k-rand-0d", rand_word, []))
    cases.append(
        ("word20k-a-in-prose-1d", prose(rng, 1, 2) + " " + a_word + " " + prose(rng, 1, 2), make_demos(rng, 1, None))
    )
    cases.append(("word20k-a-demo-1d", prose(rng, 2, 3), [(a_word, [make_pair(rng, None)])]))
    cases.append(("word20k-rand-2d", prose(rng, 1, 2) + " " + rand_word, make_demos(rng, 2, None)))
    cases.append(
        (
            "word20k-rand-answer-2d",
            prose(rng, 2, 3),
            [(prose(rng, 2, 3), [("Spell the word.", rand_word)]), (prose(rng, 1, 2), [make_pair(rng, None)])],
        )
    )
    # 6. random mixtures of 1-3 features
    names = list(FEATURES)
    for k in range(60):
        feats = rng.sample(names, rng.randint(1, 3))
        parts = [with_feature(rng, f) for f in feats]
        rng.shuffle(parts)
        text = rng.choice([" ", "\n", "  ", ""]).join(parts)
        demos = make_demos(rng, k % 3, rng.choice(feats))
        cases.append((f"mix-{k:02d}-{k % 3}d-" + "+".join(feats), text, demos))
    names_seen = set()
    out = []
    for name, text, demos in cases:
        assert name not in names_seen, name
        names_seen.add(name)
        assert text, name
        out.append({"name": name, "text": text, "demos": demos})
    return out


# ---------------------------------------------------------------------------------------------
# completions for the decoding goldens


def build_completions() -> list[tuple[str, str]]:
    rng = random.Random(1)
    pairs = [
        ("What is the capital of France?", "Paris"),
        ("Which of these is a mammal?\nOptions:\n- shark\n- whale\n- trout", "whale"),
        (
            "Is the river rising?\nLet's think step by step.",
            "The text says it rose three feet overnight.\nTherefore, the answer is yes",
        ),
        ("Translate to Chinese: good morning", "早上好"),
        ("What does the emoji show?", "A party 🎉 and a coder 👩\u200d💻"),
        ("How far is it?", "About 100\u00a0km."),
        ("List the columns.", "col1\tcol2\tcol3"),
        ("What is written in Arabic?", "مرحبا بالعالم"),
        ("Write a function that squares x.", "def f(x):\n    return x ** 2"),
        ("What is 3 + 4?", "7"),
        ("Name a French dessert.", "crème brûlée"),
        ("Summarize the passage.", "Farmers moved their cattle before the flood; the bridge stayed closed."),
    ]

    def fmt(q, a):
        return f"<QUE> {q} <ANS> {a} </END>"

    out: list[tuple[str, str]] = []
    for k, (q, a) in enumerate(pairs):
        out.append((f"one-{k:02d}", fmt(q, a)))
    for k in range(8):
        chosen = rng.sample(pairs, rng.randint(2, 4))
        out.append((f"multi-{k}", "\n\n".join(fmt(q, a) for q, a in chosen)))
    full = "\n\n".join(fmt(q, a) for q, a in pairs[:3])
    out.append(("cut-mid-question", full + "\n\n<QUE> What is the capi"))
    out.append(("cut-after-que", full + "\n\n<QUE>"))
    out.append(("cut-mid-answer", full + "\n\n<QUE> What is 3 + 4? <ANS> It is sev"))
    out.append(("cut-after-ans", fmt(*pairs[4]) + "\n\n<QUE> How far is it? <ANS>"))
    out.append(("cut-mid-end", fmt(*pairs[0]) + "\n\n<QUE> q <ANS> a </EN"))
    out.append(("cut-mid-cjk", fmt(*pairs[3]) + "\n\n<QUE> 日本語で <ANS> こんにち"))
    out.append(("cut-mid-emoji", fmt(*pairs[4]) + "\n\n<QUE> Which emoji? <ANS> 👨\u200d👩\u200d👧"))
    out.append(("trailing-newlines", fmt(*pairs[0]) + "\n\n"))
    out.append(("lead-space", " " + fmt(*pairs[0])))
    out.append(("lead-two-spaces", "  " + fmt(*pairs[9])))
    out.append(("lead-newline", "\n" + fmt(*pairs[9])))
    out.append(("lead-tab", "\t" + fmt(*pairs[6])))
    out.append(("nbsp-and-tabs", fmt("Units?\t(metric)", "100\u00a0km\tor\u00a062\u00a0miles")))
    out.append(("double-spaces", fmt("Spacing  test?", "Yes,  two  spaces.  ")))
    out.append(("markup-in-answer", fmt("Which tag ends a pair?", "The </END> tag, after <ANS>.")))
    out.append(("no-pairs-prose", "This completion has no pairs at all."))
    out.append(("empty-answer", fmt("Unanswerable?", "")))
    out.append(("literal-lower-block", fmt("What is \u2581?", "U+2581, the lower one eighth block")))
    return out


# ---------------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sp-model", required=True, help="path to mistral_common/data/tokenizer.model.v1")
    ap.add_argument("--tokenizer-dir", default=str(DEFAULT_TOK_DIR))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args()

    import tokenizers
    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, LlamaTokenizer, LlamaTokenizerFast

    assert transformers.__version__.startswith("4."), transformers.__version__
    sp_model = Path(args.sp_model)
    sha = sha256_file(sp_model)
    assert sha == SP_MODEL_SHA256, f"unexpected tokenizer.model sha256 {sha}"

    tok = LlamaTokenizerFast(vocab_file=str(sp_model), legacy=True, from_slow=True, add_prefix_space=True)
    assert tok.legacy is True
    assert (tok.bos_token, tok.bos_token_id) == ("<s>", BOS)
    assert (tok.eos_token, tok.eos_token_id) == ("</s>", EOS)
    assert (tok.unk_token, tok.unk_token_id) == ("<unk>", UNK)
    assert tok.vocab_size == 32000 and len(tok) == 32000, (tok.vocab_size, len(tok))
    assert tok.clean_up_tokenization_spaces is False

    # save, keep the three json files
    tok_dir = Path(args.tokenizer_dir)
    tok_dir.mkdir(parents=True, exist_ok=True)
    for p in tok_dir.iterdir():
        p.unlink()
    tok.save_pretrained(str(tok_dir))
    for extra in ("tokenizer.model", "added_tokens.json"):
        (tok_dir / extra).unlink(missing_ok=True)
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.pop("add_prefix_space", None)
    assert cfg["legacy"] is True
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    kept = sorted(p.name for p in tok_dir.iterdir())
    assert kept == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"], kept

    # the legacy pipeline of the Hub's Mistral-7B-v0.1 tokenizer.json, not Metaspace
    tj = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert tj["normalizer"] == {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }, tj["normalizer"]
    assert tj["pre_tokenizer"] is None, tj["pre_tokenizer"]
    assert tj["decoder"] == {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }, tj["decoder"]
    assert tj["model"]["type"] == "BPE" and tj["model"]["byte_fallback"] is True
    assert [(t["id"], t["content"], t["special"]) for t in tj["added_tokens"]] == [
        (0, "<unk>", True),
        (1, "<s>", True),
        (2, "</s>", True),
    ]

    def enc(s: str) -> list[int]:
        """One text part: no added BOS, special-token strings inside kept as plain text."""
        return tok(s, add_special_tokens=False, split_special_tokens=True).input_ids

    def enc_whole(t, s: str) -> list[int]:
        return t(s, add_special_tokens=False, split_special_tokens=False).input_ids

    def partwise(text, demos, encode) -> list[int]:
        ids: list[int] = []
        for dtext, pairs in demos:
            ids += [BOS] + encode(demo_part(dtext, pairs)) + [EOS]
        return ids + [BOS] + encode(current_part(text))

    # split_special_tokens is honoured by the 4.44 fast tokenizer
    assert enc(" a <s> b </s> <unk>") != enc_whole(tok, " a <s> b </s> <unk>")
    assert not {BOS, EOS, UNK} & set(enc(" a <s> b </s> <unk>"))
    assert {BOS, EOS, UNK} <= set(enc_whole(tok, " a <s> b </s> <unk>"))

    # SPEC's figure
    spec_s = "<s> <CON> Hello world. </CON>\n\n"
    spec_ids = enc_whole(tok, spec_s)
    spec_toks = tok.convert_ids_to_tokens(spec_ids)
    want = ["<s>", "▁", "▁<", "CON", ">", "▁Hello", "▁world", ".", "▁</", "CON", ">", "<0x0A>", "<0x0A>"]
    if spec_toks != want or spec_ids[:5] != [1, 28705, 523, 3185, 28767]:
        print("SPEC example tokens:", spec_toks, spec_ids, file=sys.stderr)
        raise AssertionError("SPEC example mismatch")
    assert partwise("Hello world.", [], enc) == spec_ids

    slow = LlamaTokenizer(vocab_file=str(sp_model), legacy=True)
    assert slow.legacy is True
    lib = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    lib_split = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    lib_split.encode_special_tokens = True
    reloaded = AutoTokenizer.from_pretrained(str(tok_dir))
    assert type(reloaded).__name__ == "LlamaTokenizerFast" and reloaded.legacy is True

    def reloaded_enc(s):
        return reloaded(s, add_special_tokens=False, split_special_tokens=True).input_ids

    def lib_enc(s):
        return lib_split.encode(s, add_special_tokens=False).ids

    cases = build_cases()
    n_clean = 0
    for c in cases:
        c["ids"] = ids = partwise(c["text"], c["demos"], enc)
        assert ids[0] == BOS and ids.count(BOS) == len(c["demos"]) + 1 and ids.count(EOS) == len(c["demos"])
        assert ids[-2:] == [13, 13], c["name"]  # "\n\n" as two <0x0A> byte tokens
        assert partwise(c["text"], c["demos"], lib_enc) == ids, c["name"]
        assert partwise(c["text"], c["demos"], reloaded_enc) == ids, c["name"]
        prompt = prompt_string(c["text"], c["demos"])
        if is_clean(c["text"], c["demos"]):
            n_clean += 1
            assert enc_whole(tok, prompt) == ids, c["name"]
            assert enc_whole(slow, prompt) == ids, c["name"]
            assert lib.encode(prompt, add_special_tokens=False).ids == ids, c["name"]
        else:
            assert enc_whole(tok, prompt) != ids, c["name"]  # the special strings do matter here
    nd = [len(c["demos"]) for c in cases]
    print(
        f"prompts: {len(cases)} ({nd.count(0)} / {nd.count(1)} / {nd.count(2)} with 0 / 1 / 2 demos), "
        f"{n_clean} clean ones cross-checked against whole-string fast, slow and tokenizers encodings"
    )

    # decoding goldens
    prefix = " </CON>\n\n"
    p_ids = enc_whole(tok, prefix)
    decode_cases = []
    for k, (name, completion) in enumerate(build_completions()):
        plain = enc_whole(tok, completion)
        f_ids = enc_whole(tok, prefix + completion)
        assert f_ids[: len(p_ids)] == p_ids, name
        cont = f_ids[len(p_ids) :]
        variants = [("plain", plain), ("cont", cont)]
        if k % 3 == 0:
            variants.append(("sp", [28705] + cont))
        for j, (mode, ids) in enumerate(variants):
            if (k + j) % 2 == 0:
                ids, mode = ids + [EOS], mode + "-eos"
            text = tok.decode(ids, skip_special_tokens=True)
            assert lib.decode(ids, skip_special_tokens=True) == text, name
            assert reloaded.decode(ids, skip_special_tokens=True) == text, name
            decode_cases.append({"name": f"{name}-{mode}", "completion": completion, "ids": ids, "text": text})
    assert any(c["ids"][0] == 28705 for c in decode_cases)
    assert any(tok.convert_ids_to_tokens(c["ids"][0]).startswith("▁") for c in decode_cases)
    assert any(not tok.convert_ids_to_tokens(c["ids"][0]).startswith("▁") for c in decode_cases)
    print(f"decode: {len(decode_cases)} cases from {len(build_completions())} completions")

    header = {
        "generator": GENERATOR,
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": "LlamaTokenizerFast(vocab_file=tokenizer.model, legacy=True, from_slow=True, "
        "add_prefix_space=True)",
        "sp_model": "mistral-common wheel, mistral_common/data/tokenizer.model.v1 (Mistral-7B-v0.1, Apache-2.0)",
        "sp_model_sha256": sha,
        "prompt_rule": "per demo: [1] + enc(' <CON> ' + text + ' </CON>\\n\\n' + '\\n\\n'.join(pairs)) + [2]; "
        "then [1] + enc(' <CON> ' + text + ' </CON>\\n\\n'); enc = add_special_tokens=False, "
        "special-token strings as plain text",
        "decode_rule": "text = tok.decode(ids, skip_special_tokens=True)",
    }
    lines = ["{"]
    for key, val in header.items():
        lines.append(f"{json.dumps(key)}: {json.dumps(val, ensure_ascii=False)},")

    def prompt_json(c):
        demos = [[dt, [{"instruction": q, "response": a} for q, a in pairs]] for dt, pairs in c["demos"]]
        return json.dumps(
            {"name": c["name"], "text": c["text"], "demos": demos, "ids": c["ids"]},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    lines.append('"prompts": [')
    lines.append(",\n".join(prompt_json(c) for c in cases))
    lines.append('],\n"decode": [')
    lines.append(",\n".join(json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in decode_cases))
    lines.append("]\n}")
    out = Path(args.out)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    back = json.loads(out.read_text(encoding="utf-8"))
    assert len(back["prompts"]) == len(cases) and back["prompts"][0]["ids"] == cases[0]["ids"]
    print(f"wrote {out} ({out.stat().st_size} bytes) and {tok_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
