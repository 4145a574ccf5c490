"""Inputs as users have them, through the CLI: split-aware folders, save_to_disk folders, .txt documents,
BOMs, .ndjson, JSON Lines named .json, non-UTF-8 CSV, a text column renamed partway, recipe-relative paths."""

import json
from pathlib import Path

import pytest
from datasets import Dataset

from ipt_data.cli import main
from ipt_data.config import AugmentConfig
from ipt_data.corpus.sources import load_source
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts

ROOT = Path(__file__).resolve().parents[1]


def cli(dataset, out, *extra) -> int:
    args = ["augment", "--dataset", str(dataset), "--model", TINY_SYNTHESIZER, "--engine", "hf"]
    return main([*args, "--max-new-tokens", "40", "--output", str(out), "--no-progress", *extra])


def report_of(out: Path) -> dict:
    return json.loads((out / "run_report.json").read_text())


def test_a_two_split_folder_reads_only_the_split_asked_for(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "data").mkdir(parents=True)
    Dataset.from_dict({"text": synthetic_texts(5, seed=1)}).to_parquet(
        str(folder / "data" / "train-00000-of-00001.parquet")
    )
    Dataset.from_dict({"text": synthetic_texts(3, seed=2)}).to_parquet(
        str(folder / "data" / "test-00000-of-00001.parquet")
    )
    assert cli(folder, tmp_path / "train") == 0 and report_of(tmp_path / "train")["rows"]["in"] == 5
    assert cli(folder, tmp_path / "test", "--split", "test") == 0 and report_of(tmp_path / "test")["rows"]["in"] == 3
    assert cli(folder, tmp_path / "x", "--split", "validation") == 2


def test_a_readme_configs_block_names_the_splits(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (folder / "a" / "one.jsonl").write_text(json.dumps({"text": "Anna is a baker who lives in Oslo."}) + "\n")
    (folder / "b" / "two.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(2)))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: a/*.jsonl\n"
        "  - split: eval\n    path: b/*.jsonl\n---\n# corpus\n"
    )
    assert sum(1 for _ in load_source(str(folder))) == 1
    assert sum(1 for _ in load_source(str(folder), split="eval")) == 2


def test_save_to_disk_folders_txt_documents_bom_and_ndjson(tmp_path):
    saved = tmp_path / "saved"
    Dataset.from_dict({"text": synthetic_texts(4)}).save_to_disk(str(saved))
    pages = tmp_path / "pages"
    pages.mkdir()
    for k in range(3):
        (pages / f"page{k}.txt").write_text(f"Title {k}\n\nFirst paragraph.\nSecond line.\n")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "Anna is a baker who lives in Oslo."}).encode() + b"\n")
    nd = tmp_path / "rows.ndjson"
    nd.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(2, seed=9)))
    # (input, flags, rows read, rows rejected): in line mode the blank lines are empty rows, rejected with a reason
    cases = [(saved, (), 4, 0), (pages, (), 3, 0), (pages, ("--text-files", "line"), 12, 3), (bom, (), 1, 0)]
    cases.append((nd, (), 2, 0))
    for k, (dataset, extra, rows_in, rejected) in enumerate(cases):  # through the CLI, as a user types it
        out = tmp_path / f"out{k}"
        assert cli(dataset, out, *extra) == 0, dataset
        report = report_of(out)
        assert (report["rows"]["in"], report["rows"]["rejected"]) == (rows_in, rejected), (dataset, extra)


def test_clear_errors_instead_of_tracebacks(tmp_path, capsys):
    named_json = tmp_path / "lines.json"
    named_json.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "broken\n')
    assert cli(named_json, tmp_path / "o1") == 2
    assert "lines.json:2: corrupt JSON" in capsys.readouterr().err  # our line reader, with the line
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\nCaf\xe9 cr\xe8me and a na\xefve r\xe9sum\xe9\n".encode("latin-1"))
    assert cli(latin, tmp_path / "o2") == 2
    err = capsys.readouterr().err
    assert "latin.csv: not UTF-8 text" in err and err.count("\n") == 1
    renamed = tmp_path / "renamed.jsonl"
    rows = [{"text": t} for t in synthetic_texts(3)] + [{"body": t} for t in synthetic_texts(3, seed=5)]
    renamed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for shard_size in ("2", "4"):  # wherever shards fall, the renamed rows are rejected with a reason
        out = tmp_path / f"o-{shard_size}"
        assert cli(renamed, out, "--shard-size", shard_size) == 0
        assert report_of(out)["rejects"] == {"missing_text_column": 3}
    assert cli(renamed, tmp_path / "o3", "--text-column", "content") == 2
    err = capsys.readouterr().err
    assert "no column 'content'" in err and "--text-column" in err


def test_typos_and_missing_files_are_one_line_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "Anna is a baker who lives in Oslo."}) + "\n")
    for dataset, extra, needle in (
        ("nope.jsonl", (), "nope.jsonl: no such file or folder"),
        ("sub/nope.jsonl", (), "no such file or folder"),
        (str(corpus), ("--engine-options", '{"batch_sise": 8}'), "has no such option"),
    ):
        assert cli(dataset, tmp_path / "out", *extra) == 2, dataset
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert cli(str(corpus), tmp_path / "out") == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert str(tmp_path) not in card and str(ROOT) not in card  # no local paths in a published card


def test_recipe_paths_are_relative_to_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anywhere but the repository
    config = AugmentConfig.from_recipe(str(ROOT / "recipes" / "cpu-demo.yaml"))
    assert Path(config.dataset).is_file() and Path(config.model).is_dir()
    from ipt_data.errors import ModelUnavailableError
    from ipt_data.run.inputs import ensure_model_available

    with pytest.raises(ModelUnavailableError, match="does not exist"):  # not "not in the Hub cache"
        ensure_model_available("./no/such/model")


def test_a_published_row_is_traced_to_its_input_rows_and_keeps_chosen_columns(tmp_path):
    texts = synthetic_texts(10, seed=3)
    corpus = tmp_path / "c.jsonl"
    rows = [{"text": t, "id": f"doc-{k}", "url": f"https://example.org/{k}", "n": k} for k, t in enumerate(texts)]
    rows[4]["n"] = "four"  # mixed types in one kept column: kept as text
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    assert cli(corpus, out, "--rounds", "2", "--fraction", "0.7", "--keep-columns", "id,url,n") == 0
    from datasets import load_dataset

    data = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert {"text", "kind", "n_tokens", "source", "id", "url"} <= set(data.column_names)
    covered = set()
    for row in data:
        docs = [int(key.split(":")[0]) for key in row["source"]]  # doc_id:chunk of every input row used
        assert row["id"] == [rows[d]["id"] for d in docs] and row["url"] == [rows[d]["url"] for d in docs]
        assert row["n"] == [str(rows[d]["n"]) if d != 4 else "four" for d in docs]
        for d in docs:
            assert texts[d] in row["text"]  # the input row's text is in the published text
        covered.update(docs)
    assert covered == set(range(10))  # every input row is traced to some published row


def test_the_achieved_mix_ratio_is_reported_and_a_shortfall_warned(tmp_path, capsys):
    general = tmp_path / "general.jsonl"
    general.write_text(json.dumps({"question": "What is 2 + 2?", "response": "4"}) + "\n")  # far too little
    out = tmp_path / "out"
    assert (
        cli(ROOT / "ipt_data" / "assets" / "sample_corpus.jsonl", out, "--limit", "6", "--general", str(general)) == 0
    )
    printed = capsys.readouterr()
    assert "the general data ran short" in printed.err and "general : augmented (tokens)" in printed.out
    mix = report_of(out)["mix"]
    assert mix["requested"] == 1.0 and 0 < mix["achieved"] < 0.2 and mix["short"]
    assert f"{mix['achieved']} by tokens (asked for 1.0; the general data ran short)" in (out / "README.md").read_text()
    assert "pairs invalid (not parsed)" in printed.out and "output raw: not_selected" in printed.out


def test_bytes_that_are_not_utf8_are_named_and_json_arrays_keep_their_text(tmp_path, capsys):
    good = [json.dumps({"text": t}).encode() for t in synthetic_texts(4, seed=6)]
    latin = b'{"text": "Anna bakes bread in a caf\xe9 every day."}'  # one Latin-1 byte, at offset 35 of line 3
    escaped = b'{"text": "a lone surrogate \\ud800 here, as JSON allows"}'
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join([*good[:2], latin, escaped, *good[2:]]) + b"\n")
    assert cli(corpus, tmp_path / "o1") == 2  # like a corrupt line: an error naming it, by default
    err = capsys.readouterr().err
    assert "c.jsonl:3: not UTF-8: byte 0xe9 at offset 35" in err and err.count("\n") == 1
    assert cli(corpus, tmp_path / "o2", "--bad-lines", "skip") == 0  # ... or a reject that says what it is
    rejects = [json.loads(x)["reason"] for x in (tmp_path / "o2.work" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == [
        f"invalid_utf8: {corpus}:3: byte 0xe9 at offset 35 of the line",
        "invalid_unicode: lone surrogate",
    ]

    array = tmp_path / "rows.json"  # a .json array: the lone surrogate is kept, so the row is rejected, not altered
    texts = synthetic_texts(3, seed=7)
    rows = [{"text": texts[0]}, {"text": "Zorblat \ud800 quivers."}, {"text": texts[1]}]
    array.write_text(json.dumps(rows, indent=2))
    assert cli(array, tmp_path / "o3") == 0
    assert report_of(tmp_path / "o3")["rejects"] == {"invalid_unicode": 1}
    from datasets import load_dataset

    data = load_dataset("parquet", data_files=str(tmp_path / "o3" / "data" / "*.parquet"), split="train")
    assert not any("Zorblat" in t for t in data["text"])
