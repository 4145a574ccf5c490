"""Open an input corpus: a Hub dataset name, a local file or folder, or any fsspec URL.

Files are read by extension (.jsonl/.ndjson/.json, .parquet, .txt/.md, .csv); a folder or URL prefix is
searched recursively for such files. A folder is split-aware as the Hub is: a `configs:` block in its
README.md, else file names (`data/train-*`, `test.jsonl`, `validation/`...) say which files are which
split, and only `split`'s are read (all files are "train" when nothing names a split). A folder written
by `Dataset.save_to_disk` is read with `load_from_disk`. `.txt`/`.md` files are one document per file
(`text_files="document"`, the default) or one per line (`"line"`). `streaming=True` gives an
`IterableDataset`.

JSON Lines files (and `.json` files whose first line is a JSON object, or that hold one JSON array) are read
by our own reader (`JsonlSource`) rather than Arrow's, because real corpora break Arrow's reader: a corrupt
line (reported with its file and line number, or skipped and counted with `bad_lines="skip"`), a line that is
not UTF-8 (a Latin-1 byte: the same, naming the byte and its offset), values of mixed types in one column,
lone surrogate escapes (kept in the text, never altered: the run rejects such rows with their reason), a
UTF-8 byte order mark. Rows come out as Python dicts, one per non-blank line or array element; a line that
cannot be a row carries the reason in `REJECT_KEY`. A .json array is parsed one element at a time.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, IterableDataset, load_dataset

from ipt_data.errors import ConfigError, InputError, InputNotFoundError

BUILDERS = {
    ".jsonl": "json",
    ".ndjson": "json",
    ".json": "json",
    ".jsonl.gz": "json",
    ".ndjson.gz": "json",
    ".json.gz": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".txt.gz": "text",
    ".md": "text",
    ".csv": "csv",
}
KINDS = ".jsonl, .ndjson, .json, .parquet, .txt, .md or .csv"


def _builder(path: str) -> str | None:
    name = path.lower()
    for ext in sorted(BUILDERS, key=len, reverse=True):
        if name.endswith(ext):
            return BUILDERS[ext]
    return None


def _data_files(fs, root: str, protocol: str, split: str, config: str | None) -> tuple[str, list[str]]:
    prefix = f"{protocol}://" if protocol not in ("file", "local") else ""
    by_split = _split_files(fs, root, prefix, config)
    if split not in by_split:
        raise InputError(f"{prefix}{root} has no split {split!r}; its splits are {sorted(by_split)} (set --split)")
    files = sorted(p for p in by_split[split] if _builder(p))
    if not files:
        raise InputNotFoundError(f"{prefix}{root}: no {KINDS} files found for the split {split!r}")
    kinds = {_builder(p) for p in files}
    if len(kinds) > 1:
        raise InputError(f"{prefix}{root}: mixed file types {sorted(kinds)}; point at one kind of file")
    return kinds.pop(), files


def _split_files(fs, root: str, prefix: str, config: str | None) -> dict[str, list[str]]:
    """Files by split: the README's `configs:` block, else the Hub's file-name conventions."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    readme = f"{root}/README.md"
    if fs.exists(readme):
        import yaml

        text = fs.cat_file(readme).decode("utf-8", "replace")
        if text.startswith("---"):
            header = yaml.safe_load(text.split("---", 2)[1]) or {}
            configs = header.get("configs") or []
            chosen = [c for c in configs if c.get("config_name") == (config or "default")] or configs[:1]
            if chosen:
                entries = chosen[0].get("data_files") or []
                if isinstance(entries, str) or (entries and not isinstance(entries[0], dict)):
                    entries = [{"split": "train", "path": entries}]  # files without split names: all train
                out: dict[str, list[str]] = {}
                for entry in entries:
                    paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
                    out[entry["split"]] = sorted(prefix + p for pat in paths for p in fs.glob(f"{root}/{pat}"))
                return out
    patterns = get_data_patterns(prefix + root)
    return {str(k): sorted(v) for k, v in DataFilesDict.from_patterns(patterns, base_path=prefix + root).items()}


REJECT_KEY = "__ipt_reject__"


class CorruptInputError(InputError):
    """A line of a JSON Lines file (or an element of a .json array) is not JSON, or not UTF-8."""


SKIP_HINT = "or pass --bad-lines skip to skip and count such lines"
BLOCK = 1 << 20  # characters read at a time from a .json array
NONSPACE = re.compile(r"[^ \t\r\n]")


def _bad_byte(raw: str) -> tuple[int, int] | None:
    """`(byte, offset)` of the first byte of `raw` that was not UTF-8 (read with errors="surrogateescape", such a
    byte is a character U+DC80..U+DCFF; valid UTF-8 never decodes to one, a JSON escape "\\udce9" is ASCII)."""
    if raw.isascii():
        return None
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as exc:
        return ord(raw[exc.start]) - 0xDC00, len(raw[: exc.start].encode("utf-8"))
    return None


class JsonlSource:
    """Iterates the rows of JSON Lines files and .json arrays (see module doc). Reiterable; reads lazily."""

    def __init__(self, files: list[str], bad_lines: str = "error", storage_options: dict | None = None):
        if bad_lines not in ("error", "skip"):
            raise ConfigError(f"bad_lines must be 'error' or 'skip', got {bad_lines!r}")
        self.files, self.bad_lines, self.storage_options = files, bad_lines, storage_options or {}

    def __iter__(self):
        import fsspec

        for path in self.files:
            with fsspec.open(
                path, "rt", encoding="utf-8", errors="surrogateescape", compression="infer", **self.storage_options
            ) as f:
                yield from (self._array(f, path) if json_layout(path) == "array" else self._lines(f, path))

    def spans(self, rows: int, limit: int | None = None) -> Iterator[list[LineSpan]] | None:
        """The rows cut into parts of `rows` rows (the last may be shorter; at most `limit` rows in all), each part
        as the byte spans of the files that hold it, for `read_spans` to read in another process; None when a file
        cannot be cut by bytes (compressed, not on this machine, a .json array). Only line ends are looked for (no
        JSON is parsed): a part is where iterating this source would put it, blank lines and line numbers alike."""
        if not all(_cuttable(path) for path in self.files):
            return None
        return self._cut(rows, limit) if limit is None or limit > 0 else iter(())

    def _cut(self, rows: int, limit: int | None) -> Iterator[list[LineSpan]]:
        part: list[LineSpan] = []
        count = 0
        for path, start, end, line in self._rows():
            if part and part[-1].path == path and start >= part[-1].end:  # (a file listed twice: a new span)
                part[-1] = LineSpan(path, part[-1].start, end, part[-1].line)
            else:
                part.append(LineSpan(path, start, end, line))
            count += 1
            if count % rows == 0 or count == limit:
                yield part
                if count == limit:
                    return
                part = []
        if part:
            yield part

    def count(self) -> int | None:
        """How many rows iterating this source gives (None where it cannot be cut by bytes: see `spans`)."""
        if not all(_cuttable(path) for path in self.files):
            return None
        return sum(1 for _ in self._rows())

    def _rows(self) -> Iterator[tuple[str, int, int, int]]:
        """`(path, start, end, line number)` of every row, in order: its bytes and the line it is on."""
        for path in self.files:
            offset, number = 0, 1
            with open(path, "rb") as f:
                for binary in f:
                    for line in _text_lines(binary):
                        if not _blank(line):
                            yield path, offset, offset + len(line), number
                        offset += len(line)
                        number += 1

    def read_spans(self, spans: list[LineSpan]) -> Iterator[dict]:
        """The rows of `spans` (a part of `spans`), as iterating the whole source gives them there."""
        import io

        for span in spans:
            with open(span.path, "rb") as f:
                f.seek(span.start)
                data = f.read(span.end - span.start)
            text = io.StringIO(data.decode("utf-8", "surrogateescape"), newline=None)  # as text mode reads it
            yield from self._lines(text, span.path, span.line)

    def _lines(self, f, path: str, first: int = 1):
        for number, line in enumerate(f, first):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            bad = _bad_byte(line)
            if bad is not None:
                yield self._not_utf8(where, bad)
                continue
            if number == 1:
                line = line.removeprefix("\ufeff")  # a byte order mark
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if self.bad_lines == "error":
                    raise CorruptInputError(
                        f"{where}: corrupt JSON at column {exc.colno} ({exc.msg.removesuffix(' at')}); "
                        f"fix the line, {SKIP_HINT}"
                    ) from exc
                yield {REJECT_KEY: f"corrupt_json: {where}: {exc.msg.removesuffix(' at')}"}
                continue
            yield _row(row)

    def _not_utf8(self, where: str, bad: tuple[int, int], unit: str = "line") -> dict:
        """A row that is not UTF-8 (a Latin-1 or Windows-1252 byte): an error, or with --bad-lines skip a reject
        naming the byte and its offset in the line (in a .json array: in the element)."""
        byte, offset = bad
        if self.bad_lines == "error":
            raise CorruptInputError(
                f"{where}: not UTF-8: byte 0x{byte:02x} at offset {offset} of the {unit} (Latin-1 or Windows-1252 "
                f"text?); convert the file (e.g. iconv -f latin1 -t utf-8), {SKIP_HINT}"
            )
        return {REJECT_KEY: f"invalid_utf8: {where}: byte 0x{byte:02x} at offset {offset} of the {unit}"}

    def _array(self, f, path: str):
        """The elements of a .json array, parsed one at a time (memory holds one element and a block), each
        string as it is written (a lone surrogate escape stays in the text, to be rejected with its reason). A
        corrupt element is an error whatever --bad-lines says: where the next element starts is unknown."""
        decoder = json.JSONDecoder()
        buf, pos, line, eof = f.read(BLOCK).removeprefix("\ufeff"), 0, 1, False

        def more() -> bool:  # read the next block; False at the end of the file
            nonlocal buf, pos, eof
            block = "" if eof else f.read(BLOCK)
            eof = not block
            buf, pos = buf[pos:] + block, 0
            return not eof

        def skip_space() -> str:  # the next character that is not white space ("" at the end of the file)
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not more():
                    return buf[pos : pos + 1]

        def corrupt(what: str, at: int):
            return CorruptInputError(
                f"{path}:{line + buf.count(chr(10), pos, at)}: corrupt JSON ({what}); a .json array cannot skip a "
                "corrupt element: fix it, or convert the file to JSON Lines"
            )

        if skip_space() != "[":
            raise corrupt("not a JSON array", pos)
        pos += 1
        if skip_space() == "]":
            return
        while True:
            skip_space()
            while True:  # decode the element; read more while it (or what follows it) is not in the buffer yet
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if more():
                        continue
                    raise corrupt(exc.msg.removesuffix(" at"), exc.pos) from exc
                if NONSPACE.search(buf, end) or not more():  # a number may go on in the next block
                    break
            where = f"{path}:{line}"
            bad = _bad_byte(buf[pos:end])
            line += buf.count("\n", pos, end)
            pos = end
            yield _row(value) if bad is None else self._not_utf8(where, bad, "element")
            sep = skip_space()
            if sep == "]":
                pos += 1
                if skip_space():
                    raise corrupt("extra data after the array", pos)
                return
            if sep != ",":
                raise corrupt("expected ',' or ']' after an element", pos)
            pos += 1


@dataclass(frozen=True)
class LineSpan:
    """Lines of one JSON Lines file: bytes `start` to `end`, the first of them line `line` of the file."""

    path: str
    start: int
    end: int
    line: int


_BARE_CR = re.compile(rb"\r(?!\n)")


def _cuttable(path: str) -> bool:
    """A local, uncompressed file of one row per line (`_lines` reads it; a .json array is parsed whole)."""
    return os.path.isfile(path) and not path.lower().endswith(".gz") and json_layout(path) != "array"


def _text_lines(binary: bytes) -> list[bytes]:
    """A line read in binary (up to b"\\n") as the lines text mode reads in it: a lone carriage return ends one."""
    if b"\r" not in binary:
        return [binary]
    cut = [m.end() for m in _BARE_CR.finditer(binary)]
    return [binary[a:b] for a, b in zip([0, *cut], [*cut, len(binary)], strict=True) if a < b]


def _blank(line: bytes) -> bool:
    """Whether `_lines` skips this line (`str.strip()` leaves nothing): ASCII white space, or, for a line that
    starts with neither `{` nor ASCII white space only, any Unicode white space (decoded only then)."""
    stripped = line.strip()
    if not stripped:
        return True
    if stripped[:1] == b"{":
        return False
    return not line.decode("utf-8", "surrogateescape").strip()


def _row(value) -> dict:
    return value if isinstance(value, dict) else {REJECT_KEY: f"not_an_object: {type(value).__name__}"}


def as_dataset(source) -> Dataset | IterableDataset:
    """A `JsonlSource` as a `Dataset` (unreadable lines dropped); datasets pass through."""
    if not isinstance(source, JsonlSource):
        return source
    return Dataset.from_list([row for row in source if REJECT_KEY not in row])


def _is_jsonl(files: list[str]) -> bool:
    """Files our reader reads: JSON Lines by name, or `.json` files holding JSON Lines or one array."""
    return all(
        f.lower().endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")) or json_layout(f) is not None
        for f in files
    )


def json_layout(path: str) -> str | None:
    """For a `.json` file: "lines" when its first non-blank line is a whole JSON object, "array" when it starts
    with `[`, else None (left to `datasets`)."""
    import fsspec

    if not path.lower().endswith((".json", ".json.gz")):
        return None
    with fsspec.open(path, "rt", encoding="utf-8-sig", errors="replace", compression="infer") as f:
        for line in f:
            if line.strip():
                if line.lstrip().startswith("["):
                    return "array"
                try:
                    return "lines" if isinstance(json.loads(line), dict) else None
                except json.JSONDecodeError:
                    return None
    return None


def _saved_to_disk(fs, root: str) -> bool:
    return fs.isdir(root) and (fs.exists(f"{root}/state.json") or fs.exists(f"{root}/dataset_dict.json"))


def _from_disk(path: str, split: str):
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(path)
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise InputError(f"{path} has no split {split!r}; its splits are {sorted(loaded)} (set --split)")
        return loaded[split]
    return loaded


def load_source(
    path: str,
    *,
    config: str | None = None,
    split: str = "train",
    streaming: bool = False,
    storage_options: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    bad_lines: str = "error",
    text_files: str = "document",
) -> Dataset | IterableDataset | JsonlSource:
    import fsspec

    is_url = "://" in path and not path.startswith("hf://")
    if is_url or os.path.exists(path):
        fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        if _saved_to_disk(fs, root):
            return _from_disk(path, split)
        if fs.isdir(root):
            builder, files = _data_files(fs, root.rstrip("/"), protocol, split, config)
        else:
            builder = _builder(path)
            if builder is None:
                raise InputError(f"{path}: unknown file type; use {KINDS}")
            files = [path]
        if _is_jsonl(files):
            return JsonlSource(files, bad_lines, storage_options)
        extra = {"sample_by": "document" if text_files == "document" else "line"} if builder == "text" else {}
        import datasets

        verbosity = datasets.logging.get_verbosity()
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # our one-line error says it, not datasets' too
        try:
            return load_dataset(
                builder, data_files=files, split="train", streaming=streaming, storage_options=storage_options, **extra
            )
        except Exception as exc:  # noqa: BLE001 - a file Arrow cannot parse: say which, in one line
            cause = exc.__cause__ or exc.__context__ or exc
            if isinstance(cause, UnicodeDecodeError) or isinstance(exc, UnicodeDecodeError):
                raise InputError(
                    f"{path}: not UTF-8 text ({cause}); convert it first, e.g. iconv -f latin1 -t utf-8"
                ) from exc
            raise InputError(f"{path}: cannot be read as {builder}: {type(cause).__name__}: {cause}") from exc
        finally:
            datasets.logging.set_verbosity(verbosity)
    if path.startswith((".", "/", "~")) or path.endswith("/") or _builder(path):  # a local path, not a Hub id
        raise InputNotFoundError(f"{path}: no such file or folder")
    kwargs = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        return load_dataset(path, config, split=split, streaming=streaming, **kwargs)
    except (FileNotFoundError, ConnectionError) as exc:  # not on the Hub, or the Hub unreachable (offline)
        raise InputNotFoundError(f"cannot open the dataset {path!r}: {str(exc).splitlines()[0]}") from exc
