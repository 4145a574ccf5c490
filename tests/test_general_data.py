"""General instruction data (`--general`), through the CLI: read to its last row before any synthesis, a corrupt
line refused there with its line, unusable rows counted by reason and left out of the mix, the rest mixed as a
file holding only them would be."""

import json
from pathlib import Path

from datasets import load_dataset

from ipt_data.cli import main
from ipt_data.corpus.mixing import general_text

ROOT = Path(__file__).resolve().parents[1]
GOOD = [0, 1, 2, 3, 4, 6, 8, 11]  # the usable rows of `general_lines`


def general_lines() -> list[str]:
    rows = [{"question": f"What does step {i} ask for?", "response": f"Flour and {i} eggs."} for i in range(12)]
    rows[5]["response"] = 42  # a number
    rows[7]["question"] = ""  # empty
    del rows[9]["response"]  # missing
    lines = [json.dumps(r) for r in rows]
    lines[10] = '{"question": "broken'  # corrupt: line 11
    return lines


def augment(out: Path, *extra: str) -> int:
    args = ["augment", "--recipe", str(ROOT / "recipes" / "cpu-demo.yaml"), "--output", str(out), "--no-progress"]
    return main([*args, "--limit", "4", "--max-new-tokens", "40", *extra])


def general_rows(out: Path) -> list[tuple[str, list[str]]]:
    data = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    return [(r["text"], r["source"]) for r in data if r["kind"] == "general"]


def test_general_data_is_read_in_full_before_synthesis_and_its_bad_rows_counted(tmp_path, capsys):
    general, work = tmp_path / "general.jsonl", tmp_path / "work"
    general.write_text("\n".join(general_lines()) + "\n")
    flags = ["--general", str(general), "--work-dir", str(work)]
    assert augment(tmp_path / "refused", *flags) == 2  # a corrupt line: refused before any synthesis
    err = capsys.readouterr().err
    assert "the general data: " in err and "general.jsonl:11: corrupt JSON" in err and err.count("\n") == 1
    assert not work.exists()

    out = tmp_path / "out"
    assert augment(out, *flags, "--bad-lines", "skip", "--streaming") == 0
    assert "general rejected: invalid_text" in capsys.readouterr().out
    report = json.loads((out / "run_report.json").read_text())
    assert report["general_rejects"] == {"corrupt_json": 1, "empty_text": 1, "invalid_text": 1, "missing_column": 1}
    rejects = [json.loads(line) for line in (work / "general" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"].split(":")[0]) for r in rejects] == [
        (5, "invalid_text"),
        (7, "empty_text"),
        (9, "missing_column"),
        (10, "corrupt_json"),
    ]
    rows = {i: json.loads(general_lines()[i]) for i in GOOD}
    mixed = general_rows(out)
    assert mixed and all(text == general_text(**rows[int(s[0].split(":")[1])]) for text, s in mixed)

    clean = tmp_path / "clean.jsonl"  # only the usable rows: the same mix (the shards of `work` are reused)
    clean.write_text("".join(general_lines()[i] + "\n" for i in GOOD))
    assert augment(tmp_path / "clean", "--general", str(clean), "--work-dir", str(work)) == 0
    again = general_rows(tmp_path / "clean")
    assert [t for t, _ in again] == [t for t, _ in mixed]
    assert [GOOD[int(s[0].split(":")[1])] for _, s in again] == [int(s[0].split(":")[1]) for _, s in mixed]
