"""Word n-grams of normalized text, hashed to 64 bits, for many texts at once.

Benchmark decontamination asks, for every text of a corpus, whether it shares an n-gram of words (13 by
default) with a benchmark item. That is the hot path of a decontamination pass, so a whole batch of texts is
hashed at once, its loops compiled (`ngram_kernels`):

- Normalization (`normalize`): NFKC, case-folded, every run of characters that are not letters or digits
  (underscore included) becomes one space, stripped. Case, punctuation and white space never change a word.
  A pure-ASCII text takes a byte-level shortcut (`bytes.translate`) that gives the same words.
- The texts of a batch (about `BATCH_BYTES`) are joined (a 0 byte between them, where every non-word byte is
  0 too) into one buffer (`pack`); a word is a run of non-zero bytes.
- A word's hash is a polynomial of its bytes, `sum(byte[i] * P**i)` (uint64, wrapping mod 2**64), mixed
  (splitmix64): one pass over the buffer (`ngram_kernels.scan`).
- An L-gram's hash is a polynomial of its L word hashes, from prefix sums (`word_hash * Q**index`) and the
  inverse powers of Q, so every L-gram costs O(1), then mixed together with L. n-grams (L = n) and the short
  "whole item" grams (L < n, see `whole`) are one hash family: an L-gram only ever equals an L-gram. Looking
  a batch up, one more compiled pass hashes every gram and keeps those a bitmap may hold
  (`ngram_kernels.probe`); only those few are hashed again here (numpy) and searched for.

Everything is plain uint64 arithmetic: the same values in every process and on every platform (Python's
`hash()` is never used). A text of more than `PIECE_CHARS` characters is hashed as overlapping pieces (n - 1
words of overlap: no n-gram lost, none counted twice), so memory stays bounded by the batch size.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np

from ipt_data.quality import ngram_kernels as kernels

_NON_WORD = re.compile(r"[\W_]+")
BATCH_BYTES = 1 << 18  # bytes of text hashed at once: the buffers stay in the CPU caches
PIECE_CHARS = 1 << 16  # a longer text is hashed as pieces of about this many characters

# ASCII bytes: letters lower-cased, digits kept, everything else 0; bytes >= 128 (UTF-8 of a normalized
# non-ASCII text) kept as they are.
_ASCII_TABLE = bytes((ord(chr(b).lower()) if chr(b).isalnum() else 0) if b < 128 else b for b in range(256))


def normalize(text: str) -> str:
    """`text` in Unicode NFKC form (composed accents, full-width letters as plain ones), case-folded, each run of
    characters that are not letters or digits replaced by one space, stripped: "The  Cat's, hat!" -> "the cat s
    hat"."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    return _NON_WORD.sub(" ", text.casefold()).strip()


def _finish(x: np.ndarray) -> np.ndarray:
    """`kernels.finish` on a uint64 array, in place (returned)."""
    x ^= x >> np.uint64(32)
    x *= kernels.MIX2
    x ^= x >> np.uint64(29)
    return x


class _Powers:
    """`base**i` and `base**-i` mod 2**64 for i < length, cached and grown (doubling) as needed."""

    def __init__(self, base: int):
        self.base, self.inverse = base, pow(base, -1, 1 << 64)
        self.cached = (np.ones(0, np.uint64), np.ones(0, np.uint64))  # one attribute: threads see both or neither
        self.lock = threading.Lock()

    def tables(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`(powers, inverse powers)`, each at least `length` long."""
        if len(self.cached[0]) < length:
            with self.lock:
                if len(self.cached[0]) < length:
                    size = max(1024, 1 << (length - 1).bit_length())
                    self.cached = (self._compute(self.base, size), self._compute(self.inverse, size))
        return self.cached

    @staticmethod
    def _compute(base: int, size: int) -> np.ndarray:
        out = np.full(size, base, np.uint64)
        out[0] = 1
        return np.cumprod(out, out=out)  # wraps mod 2**64


_WORD_POWERS = _Powers(int(kernels.WORD_BASE))


def _pieces(normalized: str, n: int, size: int) -> list[tuple[int, int, int]]:
    """Split a long normalized text into `(start, end, word_offset)` character spans of about `size` characters
    at spaces, each starting n - 1 words before the previous one's end (each piece holds at least n words)."""
    out, start, offset = [], 0, 0
    while True:
        end = normalized.find(" ", start + size) if len(normalized) - start > size else -1
        next_start = -1
        while end >= 0:  # the start of the (n-1)th word before `end`, within this piece
            next_start = end
            for _ in range(n - 1):
                next_start = normalized.rfind(" ", start, next_start)
                if next_start < 0:
                    break
            if next_start >= 0:
                next_start += 1
                break
            end = normalized.find(" ", end + 1)  # fewer than n words in the piece: make it longer
        if end < 0:
            out.append((start, len(normalized), offset))
            return out
        out.append((start, end, offset))
        offset += normalized.count(" ", start, next_start)
        start = next_start


@dataclass
class _Batch:
    """The words of a batch of texts (or pieces of texts), hashed."""

    word_hash: np.ndarray  # uint64 (words,): each word's hash
    prefix: np.ndarray  # uint64 (words + 1,): prefix sums of word_hash * Q**i
    piece_of_word: np.ndarray  # int64 (words,)
    piece_first_word: np.ndarray  # int64 (pieces + 1,): global index of each piece's first word
    piece_text: np.ndarray  # int64 (pieces,): the text (index into the caller's list) each piece is part of
    piece_offset: np.ndarray  # int64 (pieces,): word position of each piece's first word within its text
    ascii: bool = False  # whole ASCII texts, one piece each, hashed from their bytes as they are (`pack_texts`)
    whole: np.ndarray | None = None  # bool (pieces,): the piece is its whole text (None: every piece is)

    @property
    def words(self) -> int:
        return len(self.piece_of_word)

    def grams(self, length: int) -> np.ndarray:
        """The hashes of the `length`-grams starting at every word of the batch but the last `length - 1`, in
        order (index k: the gram of words k..k+length-1). Some cross from one piece into the next: `within`
        says which do not."""
        count = self.words - length + 1
        if count <= 0:
            return np.zeros(0, np.uint64)
        _, down = _WORD_POWERS.tables(self.words + 1)
        h = self.prefix[length:] - self.prefix[:count]
        h *= down[:count]
        h += np.uint64(int(length) * int(kernels.LENGTH_SALT) % (1 << 64))
        return _finish(h)

    def within(self, k: np.ndarray, length: int | np.ndarray) -> np.ndarray:
        """Which of the grams of `length` (or `length[i]`) words starting at global word indexes `k` lie within
        one piece."""
        return self.piece_of_word[k] == self.piece_of_word[k + length - 1]

    def hash_spans(self, k: np.ndarray, length: int | np.ndarray) -> np.ndarray:
        """Hashes of the grams of `length` (or `length[i]`) words starting at global word indexes `k[i]` (as
        `grams`; every gram must end within the batch)."""
        _, down = _WORD_POWERS.tables(self.words + 1)
        h = (self.prefix[k + length] - self.prefix[k]) * down[k]
        if np.ndim(length):
            h += np.asarray(length).astype(np.uint64) * kernels.LENGTH_SALT
        else:
            h += np.uint64(int(length) * int(kernels.LENGTH_SALT) % (1 << 64))
        return _finish(h)

    def locate(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(text index, word position in that text)` of global word indexes `k`."""
        piece = self.piece_of_word[k]
        return self.piece_text[piece], k - self.piece_first_word[piece] + self.piece_offset[piece]


class NgramHasher:
    """Hashes of the word n-grams of normalized texts (see the module doc). Thread-safe, deterministic."""

    def __init__(self, n: int = 13):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        self.n = n

    def hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(hashes uint64, text index int32, word position int32)` of every n-gram of every text, in order of
        text then position. A text of fewer than n words has none."""
        parts = [self._located(batch, self.n) for batch in self.batches(texts)]
        if not parts:
            return np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int32)
        hashes, text, pos = (np.concatenate(column) for column in zip(*parts, strict=True))
        order = np.lexsort((pos, text))  # batches hold the plain ASCII texts first
        return hashes[order], text[order], pos[order]

    def _located(self, batch: _Batch, length: int):
        h = batch.grams(length)
        k = np.flatnonzero(batch.within(np.arange(len(h)), length))
        h = h[k]
        text, pos = batch.locate(k)
        return h, text.astype(np.int32), pos.astype(np.int32)

    def wholes(self, texts: list[str], head: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(hashes uint64, words int32, heads uint64)`: each text's word count; for a text of 1 to n - 1 words
        the hash of its whole normalized text as one gram of that many words (0 for other texts; a text of n
        words or more counts as n); and with `head`, the hash of the gram of its first `head` words (0 for a
        text of fewer words)."""
        hashes, words = np.zeros(len(texts), np.uint64), np.zeros(len(texts), np.int32)
        heads = np.zeros(len(texts), np.uint64)
        for batch in self.batches(texts):
            counts = np.diff(batch.piece_first_word)
            texts_of, firsts = batch.piece_text, batch.piece_first_word[:-1]
            np.add.at(words, texts_of, counts.astype(np.int32))  # pieces overlap, but then there are >= n words
            short = (counts > 0) & (counts < self.n)
            hashes[texts_of[short]] = batch.hash_spans(firsts[short], counts[short])
            if head:
                headed = (counts >= head) & (batch.piece_offset == 0)
                heads[texts_of[headed]] = batch.hash_spans(firsts[headed], head)
        long = words >= self.n
        hashes[long], words[long] = 0, self.n
        return hashes, words, heads

    def whole(self, text: str) -> int | None:
        """The hash of the whole normalized `text` as one gram (the same hash as that gram found inside a longer
        text), when it has 1 to n - 1 words; None when it is empty or has n words or more."""
        hashes, words, _ = self.wholes([text])
        return int(hashes[0]) if 0 < words[0] < self.n else None

    def ngram(self, text: str, word_pos: int, length: int | None = None) -> str:
        """The normalized gram of `length` words (default n) starting at word `word_pos` of `text`."""
        words = normalize(text).split(" ")
        return " ".join(words[word_pos : word_pos + (length or self.n)])

    def batches(self, texts: list[str], batch_bytes: int | None = None, piece_chars: int | None = None):
        """The words of `texts`, hashed, as `_Batch`es of about `batch_bytes` bytes of text each (default
        `BATCH_BYTES`); a text of more than `piece_chars` characters (default `PIECE_CHARS`) in pieces. The
        ASCII texts that need no pieces (most) come first, a batch of them joined and encoded at once."""
        batch_bytes, piece_chars = batch_bytes or BATCH_BYTES, piece_chars or PIECE_CHARS
        lengths = np.fromiter(map(len, texts), np.int64, len(texts))
        whole = (lengths <= piece_chars) & np.fromiter(map(str.isascii, texts), bool, len(texts))
        plain = np.flatnonzero(whole)
        if len(plain):
            group = (np.cumsum(lengths[plain] + 1) - 1) // batch_bytes  # consecutive texts, about batch_bytes each
            for part in np.split(plain, np.flatnonzero(np.diff(group)) + 1):
                joined = "\0".join([texts[i] for i in part.tolist()]).encode("ascii")
                batch = _hash_batch(_buffer(joined, lengths[part]), part, np.zeros(len(part), np.int64))
                batch.ascii = True
                yield batch
        chunks, owners, offsets, wholes, size = [], [], [], [], 0
        for index in np.flatnonzero(~whole).tolist():
            normalized = normalize(texts[index])
            if len(normalized) <= piece_chars:
                pieces = [(normalized.encode("utf-8"), 0)]
            else:
                pieces = [
                    (normalized[s:e].encode("utf-8"), off) for s, e, off in _pieces(normalized, self.n, piece_chars)
                ]
            for data, offset in pieces:
                chunks.append(data)
                owners.append(index)
                offsets.append(offset)
                wholes.append(len(pieces) == 1)
                size += len(data) + 1
                if size >= batch_bytes:
                    yield _hash_batch(pack(chunks), owners, offsets, wholes)
                    chunks, owners, offsets, wholes, size = [], [], [], [], 0
        if chunks:
            yield _hash_batch(pack(chunks), owners, offsets, wholes)


def pack(chunks: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """`(data, piece_starts)`: `chunks` (ASCII text, or UTF-8 of normalized text) as the kernels read them: one
    buffer (uint8), 0 between chunks and at both ends and for every ASCII byte that is not a letter or digit,
    letters lower-cased, padded with zeros to a multiple of 8 bytes (8 of them at least); and where each chunk
    begins in it, then where the last one ends."""
    return _buffer(b"\0".join(chunks), np.fromiter(map(len, chunks), np.int64, len(chunks)))


def pack_texts(texts: list[str], words) -> tuple[np.ndarray, np.ndarray]:
    """`pack` of texts: an ASCII text as it is, any other as `words(text)` (its words joined by spaces, as the
    caller defines them), UTF-8. When all are ASCII (most batches), they are joined and encoded at once."""
    joined = "\0".join(texts)
    if joined.isascii():
        return _buffer(joined.encode("ascii"), np.fromiter(map(len, texts), np.int64, len(texts)))
    return pack([t.encode("ascii") if t.isascii() else words(t).encode("utf-8") for t in texts])


def _buffer(joined: bytes, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`pack`'s result from its chunks already joined by 0 bytes, and their lengths."""
    padding = bytes(16 - (len(joined) + 1) % 8)  # the closing 0, then zeros to a multiple of 8 (8 at least)
    data = np.frombuffer((b"\0" + joined + padding).translate(_ASCII_TABLE), np.uint8)
    piece_starts = np.ones(len(lengths) + 1, np.int64)  # after the leading 0
    np.cumsum(lengths + 1, out=piece_starts[1:])
    piece_starts[1:] += 1
    return data, piece_starts


def _hash_batch(packed: tuple[np.ndarray, np.ndarray], owners, offsets, wholes=None) -> _Batch:
    """The words of `packed` (`pack`'s result), hashed; its chunk i is part of text `owners[i]`, starting at
    its word `offsets[i]`, and is that whole text where `wholes[i]` (default: every chunk is)."""
    word_hash, prefix, piece_of_word, first_word = kernels.words(*packed)
    return _Batch(
        word_hash=word_hash,
        prefix=prefix,
        piece_of_word=piece_of_word,
        piece_first_word=first_word,
        piece_text=np.asarray(owners, np.int64),
        piece_offset=np.asarray(offsets, np.int64),
        whole=None if wholes is None else np.asarray(wholes, bool),
    )
