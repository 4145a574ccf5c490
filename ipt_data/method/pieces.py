"""An exact, fast path for tokenizer files whose BPE can never merge across the start of a run of `▁`.

Mistral-7B-v0.1's `tokenizer.json` (the synthesizer's) has no pre-tokenizer: its normalizer prepends `▁` and
turns every space into `▁`, and BPE then runs over a whole text as ONE word. None of its 32,000 tokens holds a
`▁` after a character that is not `▁`, so no merge can ever join the character before a run of `▁` to that
run. BPE merges the lowest-ranked pair first (the leftmost on ties), and a merge only changes the pairs beside
it; so when no merge can cross a cut, cutting the normalized text before every run of `▁` and running BPE on
each piece gives exactly the ids of the whole text, piece after piece. Pieces repeat (they are words), so each
distinct piece is run through BPE once per process and remembered: a text then costs a `str.split` and a dict
lookup per word instead of BPE over its every character.

Whether a file qualifies is decided from the file itself, never from a model name (`piecewise_problem`): the
normalizer must be exactly `Prepend("▁")` and `Replace(" ", "▁")`, there must be no pre-tokenizer, the model a
plain BPE (no dropout, no word prefix or suffix, `ignore_merges` off), `▁` a token, no token with a `▁` after
another character, and every added token special (the encoder encodes special-token strings as plain text;
an added token that is not special would be cut out of the text before normalization). Any other file keeps
the file's own pipeline. `tests/test_pieces.py` compares ids with that pipeline on the goldens and on 100,000
generated strings.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Sequence

from tokenizers import Tokenizer

MARK = "▁"  # U+2581, what the normalizer turns spaces into
_PIECE = re.compile(f"{MARK}+[^{MARK}]*|[^{MARK}]+")  # a run of marks and what follows it, up to the next run
_CROSSES = re.compile(f"[^{MARK}]{MARK}")  # a mark after another character: a merge that could cross a cut
MAX_CACHED = 200  # characters: longer pieces (one huge word) are encoded each time, not remembered
MAX_ENTRIES = 250_000  # distinct pieces remembered per process before the memo starts over (~200 bytes each: 50 MB)


def piecewise_problem(spec: dict) -> str | None:
    """Why the tokenizer described by `spec` (its parsed `tokenizer.json`) cannot be encoded piece by piece
    with the same ids, or None when it can (see the module doc)."""
    normalizer = spec.get("normalizer") or {}
    steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
    wanted = [{"type": "Prepend", "prepend": MARK}, {"type": "Replace", "pattern": {"String": " "}, "content": MARK}]
    if sorted(map(json.dumps, steps or [])) != sorted(map(json.dumps, wanted)):
        return f"its normalizer is not Prepend({MARK!r}) + Replace(' ', {MARK!r}): {json.dumps(normalizer)[:200]}"
    if spec.get("pre_tokenizer") is not None:
        return f"it has a pre-tokenizer ({spec['pre_tokenizer'].get('type')})"
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"its model is {model.get('type')}, not BPE"
    if model.get("dropout") or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return "its BPE has dropout, a continuing-subword prefix or an end-of-word suffix"
    if model.get("ignore_merges"):
        return "its BPE ignores merges for words in the vocabulary"
    vocab = model.get("vocab") or {}
    if MARK not in vocab:
        return f"{MARK!r} is not a token"
    bytes_covered = model.get("byte_fallback") and all(f"<0x{b:02X}>" in vocab for b in range(256))
    if not bytes_covered and model.get("unk_token") not in vocab:
        # a character without a symbol is dropped, and the marks on either side of it could then merge
        return "a character outside the vocabulary would be dropped (no byte fallback for every byte, no unk token)"
    crossing = next((token for token in vocab if _CROSSES.search(token)), None)
    if crossing is not None:
        return f"the token {crossing!r} has a {MARK!r} after another character: a merge could cross a cut"
    plain = [t["content"] for t in spec.get("added_tokens") or [] if not t.get("special")]
    if plain:
        return f"it has added tokens that are not special: {plain[:5]}"
    return None


def _keys(text: str) -> list[str]:
    """The pieces of `MARK + text.replace(" ", MARK)` (the normalized text), each without its first mark.

    Without a mark of its own in the text, these are the words between spaces (`str.split`, at C speed), once
    every space that follows a space (or starts the text, after the mark the normalizer prepends) is made a
    mark: a run of k spaces before a word is the piece of k marks and the word."""
    if MARK in text:
        return [piece[1:] for piece in _PIECE.findall(MARK + text.replace(" ", MARK))]
    if "  " in text:  # two replaces make every space after a space a mark (the first leaves " ▁ ▁ " runs)
        text = text.replace("  ", " " + MARK).replace(MARK + " ", MARK + MARK)
    if text.startswith(" "):
        text = MARK + text[1:]
    return text.split(" ")


class PieceEncoder:
    """Ids of plain texts, piece by piece, equal to the file's own pipeline (special-token parsing off, no
    special tokens added). Build it with `for_tokenizer`, which says None for a file that does not qualify."""

    def __init__(self, tokenizer: Tokenizer, spec: dict | None = None):
        spec = dict(json.loads(tokenizer.to_str()) if spec is None else spec)  # `spec`: the file's, already read
        spec.update(normalizer=None, pre_tokenizer=None, post_processor=None, truncation=None, padding=None)
        model = Tokenizer.from_str(json.dumps(spec))  # the file's BPE alone: one piece in, its ids out
        model.encode_special_tokens = True
        self._model = model
        self._memo = Memo()  # what BPE gave each piece seen so far: a pure function's memo

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer) -> tuple[PieceEncoder | None, str | None]:
        """`(encoder, None)` when `tokenizer` qualifies, else `(None, why not)`."""
        spec = json.loads(tokenizer.to_str())  # read once (a vocabulary of 32,000 tokens takes a tenth of a second)
        problem = piecewise_problem(spec)
        return (None, problem) if problem else (cls(tokenizer, spec), None)

    def forget(self) -> None:
        """Drop every remembered piece (what a new process starts with; benchmarks measure from there)."""
        self._memo = Memo()

    def _resolved(self, keys: list[list[str]], assemble) -> list:
        """`assemble(memo, keys)` for each text's keys, the pieces not yet remembered first run through BPE in one
        batch."""
        memo = self._memo
        missing = set().union(*keys).difference(memo.ids) if keys else set()
        long = self._learn(memo, missing) if missing else []
        try:
            out = []
            for k in keys:
                try:
                    out.append(assemble(memo, k))
                except KeyError:  # a long piece another thread had learned too and dropped: learn them alone
                    table = Memo()
                    self._learn(table, set(k))
                    out.append(assemble(table, k))
            return out
        finally:
            for key in long:  # too long to keep (one huge word): remembered for this call only
                memo.ids.pop(key, None)
                memo.lengths.pop(key, None)

    def _learn(self, memo: Memo, missing: set[str]) -> list[str]:
        """Runs the `missing` pieces through BPE (in one batch) into `memo`; returns those too long to keep."""
        missing_keys = list(missing)
        encoded = self._model.encode_batch_fast([MARK + k for k in missing_keys], add_special_tokens=False)
        if memo is self._memo and len(memo.ids) + len(missing_keys) > MAX_ENTRIES:
            self._memo = Memo()  # later calls start over; this one (and any thread reading it) ends with the old
        for key, e in zip(missing_keys, encoded, strict=True):
            memo.ids[key] = array("i", e.ids).tobytes()
            memo.lengths[key] = len(e.ids)
        return [k for k in missing_keys if len(k) > MAX_CACHED]

    def encode(self, texts: Sequence[str]) -> list[array]:
        """Ids of each text (`array("i")`), as the file's pipeline encodes it on its own (its normalizer prepends
        a mark)."""
        return self._resolved([_keys(t) if t else [] for t in texts], _ids)

    def count(self, texts: Sequence[str]) -> list[int]:
        """Token counts of `encode(texts)`, without building the ids."""
        return self._resolved([_keys(t) if t else [] for t in texts], _count)

    def encode_continuation(self, texts: Sequence[str]) -> list[array]:
        """Ids of each text as it is encoded INSIDE a longer one, after a character that is not a space or a
        mark (no mark prepended): the pieces it contributes there. Each text must start with a space."""
        if any(not t.startswith(" ") for t in texts):
            raise ValueError("a continuation must start with a space (its first piece would join the one before)")
        # " x" normalizes to the mark the normalizer would prepend to "x", then "x": the pieces of "x"
        return self._resolved([_keys(t[1:]) for t in texts], _ids)


class Memo:
    """Pieces (without their first mark) -> their ids as int32 bytes, and their lengths in tokens."""

    def __init__(self):
        self.ids: dict[str, bytes] = {}
        self.lengths: dict[str, int] = {}


def _ids(memo: Memo, keys: list[str]) -> array:
    ids = array("i")
    ids.frombytes(b"".join(map(memo.ids.__getitem__, keys)))
    return ids


def _count(memo: Memo, keys: list[str]) -> int:
    return sum(map(memo.lengths.__getitem__, keys))
