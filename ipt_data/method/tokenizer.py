"""Exact token counts and prompt encoding with the synthesizer's own tokenizer (SPEC 1-2); the prompt budget.

A prompt is encoded part by part (see `wire.prompt_parts`): the markup's `<s>`/`</s>` become the
BOS/EOS ids, and every text part is encoded with special-token parsing switched off, so a raw
text that contains `<s>` or `</s>` is tokenized as plain text. The tokenizer itself splits a
string at its special tokens before anything else, and every text part of our markup starts
with a space, so for clean texts the ids equal those of the whole prompt string tokenized with
`add_special_tokens=False`: exactly one BOS, at the start.

Tokenized once: where the file allows the exact piecewise path (`ipt_data.method.pieces`: the synthesizer's does),
a text's own ids (`text_ids`) are all its prompt and its demo need. The text part of a prompt is
` <CON> {text} </CON>\n\n`; its normalized form is cut before the mark of the space after `<CON>` and,
when the text does not end in a space or a mark, before the mark of the space before `</CON>`. No merge
crosses such a cut, so its ids are the ids of ` <CON>`, then the text's ids as the text is encoded alone
(the mark the normalizer prepends to it is the space after `<CON>`), then the ids that ` </CON>\n\n` (and a
demo's pairs) contribute after the text. A text that ends in a space or a mark is encoded whole, as is
every text when the path is off (`IPT_DATA_FAST_TOKENIZER=0`, or a file that does not qualify).
"""

from __future__ import annotations

import functools
import logging
import os
from array import array
from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer

from ipt_data.errors import ConfigError
from ipt_data.method import wire
from ipt_data.method.pieces import MARK, PieceEncoder

log = logging.getLogger(__name__)

WINDOW = 200_000  # characters: longer texts are counted (and chunked) window by window, in bounded memory
DEFAULT_MAX_MODEL_LEN = 4096
DEFAULT_MAX_NEW_TOKENS = 400
FAST_ENV = "IPT_DATA_FAST_TOKENIZER"  # "0": the file's own pipeline for every text (same ids, slower)


def fast_path_wanted() -> bool:
    """Whether encoders use the exact piecewise path where the tokenizer file allows it (`IPT_DATA_FAST_TOKENIZER`,
    on unless "0"; benchmarks turn it off to measure the file's own pipeline)."""
    return os.environ.get(FAST_ENV, "1") != "0"


def prompt_budget(max_model_len: int = DEFAULT_MAX_MODEL_LEN, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> int:
    """The most prompt tokens that leave room for `max_new_tokens` (4096 - 400 = 3696)."""
    if max_new_tokens < 1 or max_model_len <= max_new_tokens:
        raise ConfigError(f"max_model_len ({max_model_len}) must exceed max_new_tokens ({max_new_tokens}) >= 1")
    return max_model_len - max_new_tokens


def tokenizer_file(name_or_path: str) -> str | None:
    """The path of the model's own `tokenizer.json` (a local folder or file, or the Hub), or None
    when the model has none."""
    if os.path.isfile(name_or_path):
        return name_or_path
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "tokenizer.json")
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return hf_hub_download(name_or_path, "tokenizer.json")
    except EntryNotFoundError:  # no such file in the repo (or not in the offline cache)
        return None


@functools.lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Tokenizer:
    """The synthesizer's tokenizer exactly as its `tokenizer.json` defines it, cached per process.

    Read with the `tokenizers` library, so the ids are those of the file's own normalizer,
    pre-tokenizer and decoder, whatever transformers version is installed (transformers 5 rebuilds
    Llama/Mistral pipelines on load, one token off at the start of every example: SPEC 1). A
    model without a `tokenizer.json` falls back to transformers' fast tokenizer, with a warning.
    """
    path = tokenizer_file(name_or_path)
    if path is not None:
        return Tokenizer.from_file(path)
    from transformers import AutoTokenizer

    log.warning(
        "%s has no tokenizer.json: using transformers' AutoTokenizer, whose pipeline may differ from the one "
        "the model was tuned with",
        name_or_path,
    )
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if not getattr(tok, "is_fast", False):
        raise TypeError(f"{name_or_path}: ipt_data needs a fast (Rust) tokenizer for exact batched counts")
    return Tokenizer.from_str(tok.backend_tokenizer.to_str())


def _as_tokenizer(tokenizer: Any, trust_remote_code: bool = False) -> Tokenizer:
    """A `tokenizers.Tokenizer` from a name or path, a `Tokenizer`, or a transformers fast tokenizer
    (through the `tokenizer.json` it was loaded from, where there is one)."""
    if isinstance(tokenizer, str):
        return load_tokenizer(tokenizer, trust_remote_code)
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    source = getattr(tokenizer, "name_or_path", None)
    if source and os.path.isdir(source) and tokenizer_file(source):
        return load_tokenizer(source)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"not a fast tokenizer: {type(tokenizer).__name__}")
    return Tokenizer.from_str(backend.to_str())


class PromptEncoder:
    """Encodes prompts, counts tokens exactly (batched) and decodes completions, with the
    synthesizer's own `tokenizer.json` (a model name or path, a `tokenizers.Tokenizer`, or a
    transformers fast tokenizer)."""

    def __init__(self, tokenizer: Any, trust_remote_code: bool = False, fast: bool | None = None):
        if isinstance(tokenizer, PromptEncoder):
            tokenizer, trust_remote_code = tokenizer.source, tokenizer.trust_remote_code
        self.source, self.trust_remote_code = tokenizer, trust_remote_code  # it pickles as these
        self.fast = fast_path_wanted() if fast is None else fast
        self.tokenizer = _as_tokenizer(tokenizer, trust_remote_code)  # the file's pipeline, as it is
        backend = Tokenizer.from_str(self.tokenizer.to_str())
        backend.no_padding()
        backend.no_truncation()
        backend.encode_special_tokens = True  # special-token strings inside texts stay plain
        self._backend = backend
        self.special_ids = {s: self._special_id(s) for s in (wire.BOS, wire.EOS)}
        self.bos_id, self.eos_id = self.special_ids[wire.BOS], self.special_ids[wire.EOS]
        self.pieces: PieceEncoder | None = None
        if self.fast:
            self.pieces, problem = PieceEncoder.for_tokenizer(backend)
            if problem:
                log.info("the tokenizer's own pipeline encodes every text (no exact piecewise path: %s)", problem)
        if self.pieces is not None:
            self._open = array("i", [self.bos_id]) + self.pieces.encode([wire.CON_OPEN.rstrip(" ")])[0]  # <s> <CON>
            self._close = self.pieces.encode_continuation([wire.after_text()])[0]

    def _special_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer has no {token!r} token; it is not the synthesizer's tokenizer")
        return token_id

    def __reduce__(self):  # pickles as its source (datasets fingerprints and ships fn_kwargs)
        return (PromptEncoder, (self.source, self.trust_remote_code, self.fast))

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        """Plain-text ids, batched; no special tokens added or parsed."""
        return [ids.tolist() for ids in self.text_ids(texts)]

    def text_ids(self, texts: Sequence[str]) -> list[array]:
        """Plain-text ids (`array("i")`, 4 bytes a token), batched; no special tokens added or parsed."""
        if not texts:
            return []
        if self.pieces is not None:
            return self.pieces.encode(texts)
        return [array("i", e.ids) for e in self._backend.encode_batch_fast(list(texts), add_special_tokens=False)]

    def count_texts(self, texts: Sequence[str]) -> list[int]:
        """Token counts. A text over `WINDOW` characters is counted in windows cut before a space (the
        space's own token then counted as the tokenizer would mid-text), so a 50 MB text costs the memory
        of a 200,000-character one."""
        short_texts = [t for t in texts if len(t) <= WINDOW]
        if self.pieces is not None:
            short = iter(self.pieces.count(short_texts))
        else:
            short = iter(len(e.ids) for e in self._backend.encode_batch_fast(short_texts, add_special_tokens=False))
        return [self._count_long(t) if len(t) > WINDOW else next(short) for t in texts]

    def _count_long(self, text: str) -> int:
        pieces = cut_before_spaces(text, WINDOW)
        prepends = self.count_texts(["x"]) != self.count_texts([" x"])  # the normalizer adds "▁" to every part
        body = [p[1:] if prepends and k and p.startswith(" ") else p for k, p in enumerate(pieces)]
        return sum(self.count_texts([p])[0] for p in body)  # a window at a time: bounded memory

    def encode_parts_batch(self, prompts: Sequence[Sequence[tuple[str, str]]]) -> list[list[int]]:
        """Ids of several prompts given as `wire.prompt_parts`, with one batched tokenizer call."""
        texts = [value for parts in prompts for kind, value in parts if kind == "text"]
        encoded = iter(self.encode_texts(texts))
        out = []
        for parts in prompts:
            ids: list[int] = []
            for kind, value in parts:
                ids += [self.special_ids[value]] if kind == "special" else next(encoded)
            out.append(ids)
        return out

    def encode_prompt(self, text: str, demos: Sequence[wire.Demo] = ()) -> list[int]:
        return self.encode_parts_batch([wire.prompt_parts(text, demos)])[0]

    @property
    def reuses_ids(self) -> bool:
        """Whether a text's own ids (`text_ids`) are what its prompt and demo are assembled from (see the
        module doc); when not, every prompt part is encoded whole, and computing them first is waste."""
        return self.pieces is not None

    def joins(self, text: str) -> bool:
        """Whether `text`'s prompt and demo ids are assembled from its own ids (see the module doc)."""
        return self.pieces is not None and bool(text) and text[-1] not in (" ", MARK)

    def context_ids(self, texts: Sequence[str], text_ids: Sequence[array] | None = None) -> list[list[int]]:
        """Ids of the single-text prompt `<s> <CON> text </CON>\\n\\n` of each text; `text_ids`, each text's
        `text_ids`, spare encoding the texts again."""
        return self._prompt_parts(
            texts, text_ids, lambda joined: [self._close] * len(joined), lambda k: wire.context_body(texts[k])
        )

    def context_lengths(self, texts: Sequence[str], text_ids: Sequence[array] | None = None) -> list[int]:
        """`len` of each of `context_ids(texts, text_ids)`."""
        if text_ids is None or self.pieces is None:
            return [len(ids) for ids in self.context_ids(texts)]
        extra = len(self._open) + len(self._close)
        whole = iter(self.context_ids([t for t in texts if not self.joins(t)]))
        return [len(ids) + extra if self.joins(t) else len(next(whole)) for t, ids in zip(texts, text_ids, strict=True)]

    def demo_ids(self, examples: Sequence[wire.Demo], text_ids: Sequence[array] | None = None) -> list[list[int]]:
        """Ids of each `(text, pairs)` rendered as an earlier example: `<s> ... pairs</s>`; `text_ids` as in
        `context_ids`."""
        texts = [t for t, _ in examples]

        def tails(joined: list[int]) -> list[array]:  # " </CON>\n\n" and the pairs, after each joined text
            return self.pieces.encode_continuation([wire.after_text(examples[k][1]) for k in joined])

        return self._prompt_parts(texts, text_ids, tails, lambda k: wire.demo_body(*examples[k]), end=[self.eos_id])

    def _prompt_parts(self, texts, text_ids, tails, whole_body, end: Sequence[int] = ()) -> list[list[int]]:
        """BOS, then ` <CON>`'s ids, the text's own and `tails(joined)`'s for the texts that join (when `text_ids`
        are given), the whole body's (`whole_body(k)`) for the rest; then `end`."""
        n = len(texts)
        joined = [k for k in range(n) if text_ids is not None and self.joins(texts[k])]
        out: list[list[int] | None] = [None] * n
        for k, tail in zip(joined, tails(joined) if joined else [], strict=True):
            own = text_ids[k] if isinstance(text_ids[k], array) else array("i", text_ids[k])
            out[k] = (self._open + own + tail).tolist() + list(end)
        rest = [k for k in range(n) if out[k] is None]
        for k, ids in zip(rest, self.text_ids([whole_body(k) for k in rest]), strict=True):
            out[k] = [self.bos_id, *ids.tolist(), *end]
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` by the file's own decoder (a completion: special tokens skipped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_prompt(self, ids: Sequence[int]) -> str:
        """The prompt string of prompt ids (`wire.build_prompt`'s), for servers that take only text:
        each text part decoded on its own (the decoder drops the space the normalizer prepended) and
        the markup's `<s>`/`</s>` written out. Re-encoded as SPEC 1 says, it gives `ids` back
        (for texts without special-token strings)."""
        names = {v: k for k, v in self.special_ids.items()}
        out, part = [], []
        for token in [*ids, None]:
            if token in names or token is None:
                if part:
                    out.append(self.tokenizer.decode(part, skip_special_tokens=False))
                    part = []
                if token is not None:
                    out.append(names[token])
            else:
                part.append(token)
        return "".join(out)

    def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.decode_batch([list(r) for r in rows], skip_special_tokens=True)


def cut_before_spaces(text: str, size: int) -> list[str]:
    """`text` in consecutive pieces of at most `size` characters (more only for a single space-free run
    longer than that), each cut just before a space in the second half of its window; they join to `text`."""
    pieces, start = [], 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        cut = cut if cut > start else start + size
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


@functools.lru_cache(maxsize=8)
def _cached_encoder(name_or_path: str, trust_remote_code: bool, fast: bool) -> PromptEncoder:
    return PromptEncoder(name_or_path, trust_remote_code, fast)


def get_encoder(tokenizer: Any, trust_remote_code: bool = False) -> PromptEncoder:
    """A `PromptEncoder` for a tokenizer object, or for a model name/path (cached per process)."""
    if isinstance(tokenizer, PromptEncoder):
        return tokenizer
    if isinstance(tokenizer, str):
        return _cached_encoder(tokenizer, trust_remote_code, fast_path_wanted())
    return PromptEncoder(tokenizer)
