"""The loops of n-gram hashing and of the pair filters, compiled (numba): one pass over a batch's bytes for its
words (`scan`, `words`), one pass over its words for the grams a bitmap may hold (`probe`) or a table holds
(`find`), one pass over a batch of pairs for their word statistics (`pair_stats`).

They compute exactly the values `ipt_data.quality.ngrams` defines (its module doc): a word's hash is splitmix64 of
the polynomial of its bytes in `BYTE_BASE`; the word prefix sums are `sum(word_hash[i] * WORD_BASE**i)`; an
L-gram's hash is `finish((prefix[k + L] - prefix[k]) * WORD_BASE**-k + L * LENGTH_SALT)`. Every value is uint64
and every product wraps mod 2**64, as numpy's do. Compiled on first use and cached on disk (`cache=True`), so a
new process loads them in a fraction of a second.
"""

from __future__ import annotations

import sys

import numba
import numpy as np

BYTE_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: invertible mod 2**64
WORD_BASE = np.uint64(0xC2B2AE3D27D4EB4F)
WORD_INVERSE = np.uint64(pow(int(WORD_BASE), -1, 1 << 64))
LENGTH_SALT = np.uint64(0xD6E8FEB86659FD93)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
_ONE, _SEVEN = np.uint64(1), np.uint64(7)
_S7, _S27, _S29, _S30, _S31, _S32, _S56, _S58, _S64 = (np.uint64(s) for s in (7, 27, 29, 30, 31, 32, 56, 58, 64))
_S6, _S12, _S18, _S63 = (np.uint64(s) for s in (6, 12, 18, 63))
LITTLE = sys.byteorder == "little"
_BYTE = np.uint64(0xFF)
_LOW7, _HIGH = np.uint64(0x7F7F7F7F7F7F7F7F), np.uint64(0x8080808080808080)
_GATHER = np.uint64(0x0102040810204080)  # bits 8k (k < 8) to bits 56 + k
_LOWEST = np.array([(m & -m).bit_length() - 1 if m else 0 for m in range(256)], np.int64)  # lowest set bit
# `byte * BYTE_BASE**k` for k < 8, every byte; then BYTE_BASE**8 (a word's next 8 bytes)
_BYTE_TERMS = np.array(
    [[b * pow(int(BYTE_BASE), k, 1 << 64) % (1 << 64) for b in range(256)] for k in range(8)], np.uint64
)
_BYTE_BASE8 = np.uint64(pow(int(BYTE_BASE), 8, 1 << 64))


def _jit(function):
    """Compiled without the GIL, cached on disk (beside this file, or in numba's user cache folder); where
    neither can be written (a read-only install, no `NUMBA_CACHE_DIR`), compiled afresh in each process."""
    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@_jit
def mix(x):
    """splitmix64's finalizer."""
    x ^= x >> _S30
    x *= MIX1
    x ^= x >> _S27
    x *= MIX2
    return x ^ (x >> _S31)


@_jit
def finish(x):
    """The gram hashes' lighter finalizer (their word hashes are mixed already)."""
    x ^= x >> _S32
    x *= MIX2
    return x ^ (x >> _S29)


@_jit
def scan(data, piece_starts):
    """The words of `data` (uint8: pieces of text, 0 for every byte that is not part of a word, and 0 between
    pieces and at both ends; its length a multiple of 8 with 8 zero bytes at the end at least, as
    `ngrams.pack` makes it; `piece_starts[i]` is where piece i begins, then where the text ends). Returns
    `(word_hash, piece_of_word, first_word)`: each word's hash (uint64), its piece, and the index of each
    piece's first word (then the word count).

    Eight bytes at a time: where words start and end comes from each 8-byte block's mask of non-zero bytes
    (no branch per byte); a word's hash from its bytes read 8 at a time and looked up in `_BYTE_TERMS`
    (`byte * P**position`: no multiplication per byte)."""
    blocks = data.view(np.uint64)
    cap = len(data) // 2 + 4
    starts = np.empty(cap, np.int64)
    ends = np.empty(cap, np.int64)
    found_starts = found_ends = 0
    previous = np.uint64(0)  # the top bit: the last byte of the block before was part of a word
    for b in range(len(blocks)):
        x = blocks[b] if LITTLE else _swap(blocks[b])
        nonzero = ((((x & _LOW7) + _LOW7) | x) & _HIGH) >> _S7  # bit 8k: byte k is not 0
        mask = (nonzero * _GATHER) >> _S56  # bit k: byte k is not 0
        before = ((mask << _ONE) | previous) & _BYTE
        begin, end = mask & ~before, ~mask & before & _BYTE
        previous = mask >> _S7
        base = b * 8
        for _ in range(4):  # at most 4 words begin, and 4 end, in 8 bytes
            starts[found_starts] = base + _LOWEST[begin]
            found_starts += begin != 0
            begin &= begin - _ONE
            ends[found_ends] = base + _LOWEST[end]
            found_ends += end != 0
            end &= end - _ONE
    hashes = np.empty(found_starts, np.uint64)
    for w in range(found_starts):
        at, left = starts[w], ends[w] - starts[w]
        h, scale = np.uint64(0), _ONE
        while True:
            q, r = at >> 3, np.uint64((at & 7) * 8)
            block = blocks[q] if LITTLE else _swap(blocks[q])
            chunk = block >> r
            if r:
                following = blocks[q + 1] if LITTLE else _swap(blocks[q + 1])
                chunk |= following << (_S64 - r)
            if left < 8:
                chunk &= (_ONE << np.uint64(8 * left)) - _ONE
            part = np.uint64(0)
            for k in range(8):
                part += _BYTE_TERMS[k, (chunk >> np.uint64(8 * k)) & _BYTE]
            h += part * scale
            left -= 8
            if left <= 0:
                break
            at += 8
            scale *= _BYTE_BASE8
        hashes[w] = mix(h)
    first_word = np.searchsorted(starts[:found_starts], piece_starts)
    piece_of_word = np.empty(found_starts, np.int64)
    for piece in range(len(piece_starts) - 1):
        piece_of_word[first_word[piece] : first_word[piece + 1]] = piece
    return hashes, piece_of_word, first_word


@_jit
def _swap(x):
    """`x` with its 8 bytes in the opposite order (a big-endian machine reads the blocks so)."""
    out = np.uint64(0)
    for _ in range(8):
        out = (out << np.uint64(8)) | (x & _BYTE)
        x >>= np.uint64(8)
    return out


@_jit
def words(data, piece_starts):
    """As `scan`, with the word prefix sums (uint64, words + 1) after the word hashes: `(word_hash, prefix,
    piece_of_word, first_word)`."""
    hashes, piece_of_word, first_word = scan(data, piece_starts)
    prefix = np.empty(len(hashes) + 1, np.uint64)
    prefix[0] = 0
    power = _ONE
    for w in range(len(hashes)):
        prefix[w + 1] = prefix[w] + hashes[w] * power
        power *= WORD_BASE
    return hashes, prefix, piece_of_word, first_word


STATS = ("words", "distinct", "repeats", "top", "content", "found", "yes_no", "run")  # pair_stats' columns
_TRIGRAM1, _TRIGRAM2 = np.uint64(0xA0761D6478BD642F), np.uint64(0xE7037ED1A0B428DB)


@_jit
def _slots(count):
    """A table size for `count` keys: a power of 2, at least 16 and twice `count`."""
    size = 16
    while size < 2 * count:
        size *= 2
    return size


@_jit
def _sorted_has(table, h):
    """Whether the sorted uint64 array `table` holds `h`."""
    at = np.searchsorted(table, h)
    return at < len(table) and table[at] == h


@_jit
def _longest_run(raw, start, end):
    """The longest run of one byte that is not ASCII white space (tab to carriage return, the four separators
    0x1c-0x1f, space) in `raw[start:end]`."""
    best = run = 0
    previous = -1
    for i in range(start, end):
        b = raw[i]
        if b <= 32 and (b == 32 or 9 <= b <= 13 or b >= 28):
            previous, run = -1, 0
            continue
        run = run + 1 if b == previous else 1
        previous = b
        best = max(best, run)
    return best


@_jit
def pair_stats(text_hash, text_first, strings, string_starts, raw, raw_ends, owner, ground, stop, yes_no):
    """Word statistics of short strings (a pair's question, response, answer), and for some of them how many of
    their words a text holds. `text_hash`/`text_first`: the texts' words as `scan` gives them (`word_hash`,
    `first_word`) for the texts packed as `ngrams.pack` does; `strings`/`string_starts`: the strings, packed
    the same way, string i about text `owner[i]` (ascending); `raw`: their UTF-8 bytes
    end to end (string i ends at `raw_ends[i]`); `ground[i]`: whether to
    measure string i against its text; `stop`, `yes_no`: sorted word hashes of the stopwords and of the yes/no
    words. Returns an int64 array (strings x `STATS`):

    - words: its word count; distinct: its distinct words; top: how often its most frequent word occurs;
    - repeats: how many of its word 3-grams repeat an earlier one;
    - run: its longest run of one byte that is not white space (of one character, for an ASCII string);
    - (when `ground[i]`) content: its distinct words that are neither stopwords nor yes/no words; found: how
      many of those its text holds; yes_no: its distinct yes/no words.

    Words are told apart by their 64-bit hashes (as everywhere in `ngrams`): each text's words and each
    string's words and 3-grams go into small open-addressing tables."""
    word_hash, _, first = scan(strings, string_starts)
    count = len(first) - 1
    out = np.zeros((count, 8), np.int64)
    most = 1
    for i in range(count):
        most = max(most, first[i + 1] - first[i])
    keys = np.empty(_slots(most), np.uint64)  # one string's words (with their counts), then its 3-grams
    counts = np.zeros(len(keys), np.int64)
    stamp = np.full(len(keys), -1, np.int64)  # which string filled each slot: no clearing between strings
    gram_keys = np.empty(len(keys), np.uint64)
    gram_stamp = np.full(len(keys), -1, np.int64)
    most_asked, group = 1, 0  # the most words in one text's strings
    while group < count:
        end = group
        while end < count and owner[end] == owner[group]:
            end += 1
        most_asked = max(most_asked, first[end] - first[group])
        group = end
    asked = np.empty(most_asked, np.uint64)  # the content words of a text's grounded strings, distinct per string
    asked_keys = np.empty(_slots(most_asked), np.uint64)  # ... and in a table, to stream the text through
    asked_found = np.zeros(len(asked_keys), np.bool_)
    asked_stamp = np.full(len(asked_keys), -1, np.int64)  # which text filled each slot
    group = 0
    while group < count:  # the strings of one text at a time
        t = owner[group]
        end = group
        while end < count and owner[end] == t:
            end += 1
        asked_count = 0
        for i in range(group, end):
            out[i, 7] = _longest_run(raw, raw_ends[i - 1] if i else 0, raw_ends[i])
            a, b = first[i], first[i + 1]
            n = b - a
            out[i, 0] = n
            if n == 0:
                continue
            mask = np.uint64(_slots(n) - 1)
            distinct = top = content = yes = 0
            for w in range(a, b):
                h = word_hash[w]
                slot = h & mask
                while stamp[slot] == i and keys[slot] != h:
                    slot = (slot + _ONE) & mask
                if stamp[slot] != i:  # the word's first occurrence in this string
                    stamp[slot], keys[slot], counts[slot] = i, h, 0
                    distinct += 1
                    if ground[i]:
                        if _sorted_has(yes_no, h):
                            yes += 1
                        elif not _sorted_has(stop, h):
                            content += 1
                            asked[asked_count] = h
                            asked_count += 1
                counts[slot] += 1
                top = max(top, counts[slot])
            repeats = 0
            for w in range(a, b - 2):
                g = mix(word_hash[w] * _TRIGRAM1 + word_hash[w + 1] * _TRIGRAM2 + word_hash[w + 2])
                slot = g & mask
                while gram_stamp[slot] == i and gram_keys[slot] != g:
                    slot = (slot + _ONE) & mask
                if gram_stamp[slot] == i:
                    repeats += 1
                else:
                    gram_stamp[slot], gram_keys[slot] = i, g
            out[i, 1], out[i, 2], out[i, 3], out[i, 4], out[i, 6] = distinct, repeats, top, content, yes
        if asked_count == 0 or t >= len(text_first) - 1:
            group = end
            continue
        # the asked words in a small table (and a 64-bit summary of them: most of the text's words are told apart
        # by it alone); the text's words streamed through it, marking those found, until all are
        mask = np.uint64(_slots(asked_count) - 1)
        summary = np.uint64(0)
        distinct = 0
        for q in range(asked_count):
            h = asked[q]
            summary |= _ONE << (h >> _S58)
            slot = h & mask
            while asked_stamp[slot] == t and asked_keys[slot] != h:
                slot = (slot + _ONE) & mask
            if asked_stamp[slot] != t:
                distinct += 1
            asked_stamp[slot], asked_keys[slot], asked_found[slot] = t, h, False
        for w in range(text_first[t], text_first[t + 1]):
            h = text_hash[w]
            if not (summary >> (h >> _S58)) & _ONE:
                continue
            slot = h & mask
            while asked_stamp[slot] == t:
                if asked_keys[slot] == h:
                    if not asked_found[slot]:
                        asked_found[slot] = True
                        distinct -= 1
                    break
                slot = (slot + _ONE) & mask
            if distinct == 0:
                break
        q = 0
        for i in range(group, end):  # each grounded string's content words, in the order they were asked
            found = 0
            for _ in range(out[i, 4]):
                h = asked[q]
                slot = h & mask
                while asked_keys[slot] != h:
                    slot = (slot + _ONE) & mask
                found += asked_found[slot]
                q += 1
            out[i, 5] = found
        group = end
    return out


@_jit
def gram_hashes(prefix, length, count):
    """The hashes (uint64) of the grams of `length` words starting at words 0 .. count - 1, from the word prefix
    sums `prefix` (`words`): `finish((prefix[k + length] - prefix[k]) * WORD_BASE**-k + length * LENGTH_SALT)`,
    as `ngrams._Batch.grams` computes them in numpy."""
    out = np.empty(count, np.uint64)
    salt = np.uint64(length) * LENGTH_SALT
    down = _ONE
    for k in range(count):
        out[k] = finish((prefix[k + length] - prefix[k]) * down + salt)
        down *= WORD_INVERSE
    return out


@_jit
def probe(prefix, piece_of_word, length, bitmap, shift):
    """The word indexes k (int64, ascending) whose gram of `length` words lies within one piece and may be in a
    set by its bitmap: bit `h & 7` of byte `h >> shift` set, for the gram's hash h (`benchmarks._bitmap`). The
    bitmap is read for every gram with no branch on what it holds; the few let through are then checked."""
    hashes = gram_hashes(prefix, length, max(len(piece_of_word) - length + 1, 0))
    out = np.empty(len(hashes), np.int64)
    found = 0
    shift = np.uint64(shift)
    for k in range(len(hashes)):
        h = hashes[k]
        out[found] = k
        found += (bitmap[h >> shift] >> (h & _SEVEN)) & _ONE != 0
    kept = 0
    for c in range(found):
        k = out[c]
        if piece_of_word[k] == piece_of_word[k + length - 1]:
            out[kept] = k
            kept += 1
    return out[:kept]


@_jit
def bloom_mask(h):
    """A value's bits in its word of a blocked Bloom filter (`benchmarks._bloom`): bits `h & 63`, `(h >> 6) & 63`,
    `(h >> 12) & 63` and `(h >> 18) & 63` (the word is chosen by the top bits)."""
    return (
        (_ONE << (h & _S63))
        | (_ONE << ((h >> _S6) & _S63))
        | (_ONE << ((h >> _S12) & _S63))
        | (_ONE << ((h >> _S18) & _S63))
    )


@_jit
def find(prefix, piece_of_word, length, bloom, shift, table):
    """The word indexes k (int64, ascending) whose gram of `length` words lies within one piece and is in `table`
    (sorted unique uint64), and where it is there (int64): `(k, at)`. Only the grams a blocked Bloom filter lets
    through (`bloom`, uint64 words: every bit of `bloom_mask(h)` set in word `h >> shift`; a few in ten thousand
    of those not in the table) are searched for in `table`.

    In passes: every gram's hash; then the Bloom filter read for each, with no branch on what it holds (its
    reads, at random places in a few MiB, then overlap rather than wait on each other); then the few let
    through checked."""
    hashes = gram_hashes(prefix, length, max(len(piece_of_word) - length + 1, 0))
    shift = np.uint64(shift)
    maybe = np.empty(len(hashes), np.int64)
    let_through = 0
    for k in range(len(hashes)):
        h = hashes[k]
        m = bloom_mask(h)
        maybe[let_through] = k
        let_through += (bloom[h >> shift] & m) == m
    ks = np.empty(let_through, np.int64)
    at = np.empty(let_through, np.int64)
    found = 0
    for c in range(let_through):
        k = maybe[c]
        if piece_of_word[k] == piece_of_word[k + length - 1]:
            h = hashes[k]
            i = np.searchsorted(table, h)
            if i < len(table) and table[i] == h:
                ks[found], at[found] = k, i
                found += 1
    return ks[:found], at[:found]


def warm() -> None:
    """Compile (or load from the disk cache) every kernel now, for the argument types they are called with (a
    packed buffer is read-only; a bitmap is read-only when memory-mapped), so that a run's set-up pays for it
    rather than its first batch."""
    data = np.frombuffer(b"\0aa" + bytes(13), np.uint8)  # read-only and padded, as `ngrams.pack` gives it
    starts = np.array([1, 3], np.int64)
    word_hash, prefix, piece_of_word, first_word = words(data, starts)
    bitmap = np.zeros(8, np.uint8)
    probe(prefix, piece_of_word, 1, bitmap, 61)
    bitmap.flags.writeable = False
    probe(prefix, piece_of_word, 1, bitmap, 61)
    table = np.zeros(1, np.uint64)
    raw = np.frombuffer(b"aa", np.uint8)
    raw_ends, owner, ground = np.array([2], np.int64), np.zeros(1, np.int64), np.ones(1, np.bool_)
    pair_stats(word_hash, first_word, data, starts, raw, raw_ends, owner, ground, table, table)
    table.flags.writeable = False  # a memory-mapped index's hashes
    bloom = np.zeros(2, np.uint64)
    bloom.flags.writeable = False  # memory-mapped
    find(prefix, piece_of_word, 1, bloom, 63, table)
