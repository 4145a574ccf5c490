"""Workers read their own rows (issue 24): a shard task says where its rows are (byte spans of JSON Lines files, a
range of Arrow files) and whoever runs it reads exactly the rows the driver would have read, line numbers,
blank lines, byte order marks, carriage returns and bad lines included."""

import itertools
import json
import pickle
import random

import pytest
from datasets import Dataset, load_dataset

from ipt_data.config import AugmentConfig
from ipt_data.corpus.sources import CorruptInputError, JsonlSource, load_source
from ipt_data.run import inputs
from ipt_data.run.inputs import ArrowRows, LineRows, _row_shards, iter_shards
from ipt_data.run.shard import ShardWork
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

# what a line can be: rows, blank lines of every kind, bad rows, and every line end text mode knows
PIECES = [
    b'{"text": "plain"}',
    b'{"text": "caf\xc3\xa9 \\u2028 \xe6\x9d\xb1"}',
    b"",
    b"   \t",
    b"\xc2\xa0",  # a no-break space alone: blank to str.strip()
    b"\xe3\x80\x80 ",  # an ideographic space
    b"[1, 2]",  # JSON, not an object: a reject
    b'{"text": 5}',
    b'{"text": "x", "n": 1.5, "nested": {"a": [1]}}',
    b' {"text": "indented"}',
]
ENDS = [b"\n", b"\r\n", b"\r"]


def random_file(rng: random.Random, lines: int, bom: bool) -> bytes:
    out = [b"\xef\xbb\xbf"] if bom else []
    for _ in range(lines):
        out += [rng.choice(PIECES), rng.choice(ENDS)]
    if rng.random() < 0.5:
        out.pop()  # no line end after the last line
    return b"".join(out)


def driver_read(source, size, limit):
    """The shards as the driver read them before workers did (`_row_shards`)."""
    return [(k, start, rows()) for k, start, rows in _row_shards(source, size, limit)]


@pytest.mark.parametrize("seed", range(6))
def test_line_spans_give_the_rows_the_driver_read(tmp_path, seed):
    rng = random.Random(seed)
    files = []
    for i in range(rng.randint(1, 4)):
        path = tmp_path / f"part-{i}.jsonl"
        path.write_bytes(random_file(rng, rng.randint(0, 40), bom=rng.random() < 0.3))
        files.append(str(path))
    if seed % 2:
        files.append(files[0])  # a file listed twice (overlapping patterns): read twice, as the driver did
    source = JsonlSource(files, bad_lines="skip")  # a BOM before a blank line makes a corrupt one: a reject
    total = sum(1 for _ in source)
    for size, limit in itertools.product((1, 3, 7, 100), (None, 0, 1, total // 2, total, total + 5)):
        tasks = list(iter_shards(source, size, limit))
        assert all(isinstance(t.where, LineRows) and t.rows is None for t in tasks)  # nothing read by the driver
        tasks = [pickle.loads(pickle.dumps(t)) for t in tasks]  # as a worker process gets them
        assert [(t.k, t.start, t.read()) for t in tasks] == driver_read(source, size, limit), (size, limit)


def test_a_corrupt_line_is_named_by_its_file_and_line_in_the_worker(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\r\n{"text": "c"}\n{"text": oops}\n{"text": "d"}\n')
    tasks = list(iter_shards(JsonlSource([str(path)]), 2, None))
    assert tasks[0].read() == {"text": ["a", "b"]}
    with pytest.raises(CorruptInputError, match=r"c\.jsonl:5: corrupt JSON"):
        tasks[1].read()
    skipped = list(iter_shards(JsonlSource([str(path)], bad_lines="skip"), 2, None))
    assert skipped[1].read()["__ipt_reject__"][1].startswith(f"corrupt_json: {path}:5:")


def test_what_a_worker_cannot_cut_is_read_by_the_driver(tmp_path):
    import gzip

    rows = [{"text": f"row {i}"} for i in range(5)]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    (tmp_path / "b.json").write_text(json.dumps(rows))  # a .json array
    for name in ("a.jsonl.gz", "b.json"):
        tasks = list(iter_shards(JsonlSource([str(tmp_path / name)]), 2, None))
        assert [t.where for t in tasks] == [None] * 3
        assert [t.rows["text"] for t in tasks] == [["row 0", "row 1"], ["row 2", "row 3"], ["row 4"]]


def test_an_arrow_dataset_is_read_by_row_ranges(tmp_path):
    Dataset.from_dict({"text": [f"t{i}" for i in range(23)], "n": list(range(23))}).to_parquet(
        str(tmp_path / "c.parquet")
    )
    source = load_source(str(tmp_path / "c.parquet"))
    for limit in (None, 10):
        tasks = [pickle.loads(pickle.dumps(t)) for t in iter_shards(source, 5, limit)]
        assert all(isinstance(t.where, ArrowRows) for t in tasks)
        assert [(t.k, t.start, t.read()) for t in tasks] == driver_read(source, 5, limit)
    shuffled = load_dataset("parquet", data_files=str(tmp_path / "c.parquet"), split="train").shuffle(seed=1)
    assert inputs._arrow_files(shuffled) is None  # an indices mapping: the files' order is not the rows'
    assert [t.where for t in iter_shards(shuffled, 10, None)] == [None] * 3
    in_memory = Dataset.from_dict({"text": ["a", "b", "c"]})
    assert [t.rows for t in iter_shards(in_memory, 2, None)] == [{"text": ["a", "b"]}, {"text": ["c"]}]


def test_the_worker_hashes_and_reuses_done_shards_without_the_driver(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"A text about item {i}. " * 8}) + "\n" for i in range(6)))
    config = AugmentConfig(
        dataset=str(corpus), model=TINY_SYNTHESIZER, engine="hf", output=str(tmp_path / "out"), shard_size=4,
        max_new_tokens=8, rounds=1,
    )  # fmt: skip
    work = ShardWork(config, str(tmp_path / "work"))
    task = next(iter_shards(load_source(str(corpus)), 4, None))
    assert task.rows is None and work.reused(task) is None  # not made yet: read and hashed in the worker
    made = work(pickle.loads(pickle.dumps(task)))
    assert not made.reused and made.input_hash == task.input_hash and len(made.input_hash) == 32
    again = work(pickle.loads(pickle.dumps(next(iter_shards(load_source(str(corpus)), 4, None)))))
    assert again.reused and again.input_hash == made.input_hash
    counts = ("rows", "chunks", "status")
    assert {k: again.stats[k] for k in counts} == {k: made.stats[k] for k in counts}
