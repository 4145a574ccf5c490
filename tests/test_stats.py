"""Corpus statistics and figures (issue 15): every number equals a brute-force recount, on the demo's output and
on a 100,000-row synthetic corpus; figures are valid, non-blank PNGs; the card shows them and reads as Markdown."""

import io
import json
import random
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from markdown_it import MarkdownIt
from test_templify_tasks import varied_chains

import ipt_data.corpus.stats as stats_module
from ipt_data import mix, stats, templify_batch, templify_features
from ipt_data.cli import main
from ipt_data.config import SAMPLE_CORPUS
from ipt_data.corpus.plots import figures
from ipt_data.corpus.stats import LENGTH_BINS, bin_label, opening, task_families
from ipt_data.testing.fixtures import TINY_SYNTHESIZER


def recount(rows: list[dict], report: dict | None = None) -> dict:
    """The statistics, counted the obvious way over every row held in memory."""
    family = task_families()
    out: dict = {"rows": Counter(), "tokens": Counter(), "length_tokens": {}}
    by_kind: dict[str, list[int]] = {}
    for r in rows:
        out["rows"][r["kind"]] += 1
        out["tokens"][r["kind"]] += r["n_tokens"]
        by_kind.setdefault(r["kind"], []).append(r["n_tokens"])
    for kind, lengths in sorted(by_kind.items()):
        bins = Counter(max(k for k, edge in enumerate(LENGTH_BINS) if n >= edge) for n in lengths)
        out["length_tokens"][kind] = {
            "min": min(lengths),
            "max": max(lengths),
            "mean": round(sum(lengths) / len(lengths), 2),
            "bins": {bin_label(k): bins.get(k, 0) for k in range(len(LENGTH_BINS))},
        }
    aug = [r for r in rows if r["kind"] == "augmented"]
    pairs = [p for r in aug for p in r["pairs"]]
    questions = [" ".join(p["instruction"].lower().split()) for p in pairs]
    openings = Counter(opening(p["instruction"]) for p in pairs)
    texts, pair_keys = Counter(r["text"] for r in rows), Counter((p["instruction"], p["response"]) for p in pairs)
    return {
        "rows": dict(sorted(out["rows"].items())),
        "tokens": dict(sorted(out["tokens"].items())),
        "length_tokens": out["length_tokens"],
        "pairs": len(pairs),
        "pairs_per_text": {str(k): n for k, n in sorted(Counter(r["n_pairs"] for r in aug).items())},
        "mean_pairs_per_text": round(len(pairs) / len(aug), 3) if aug else 0.0,
        "tasks": dict(sorted(Counter(p["task"] for p in pairs).items())),
        "task_families": dict(sorted(Counter(family[p["task"]] for p in pairs).items())),
        "layouts": dict(sorted(Counter(r["layout"] for r in aug).items())),
        "inverted": sum(r["inverted"] for r in aug),
        "shots_per_chain": {str(k): n for k, n in sorted(Counter(len(r["source"]) for r in aug).items())},
        "diversity": {
            "questions": len(questions),
            "distinct_questions": len(set(questions)),
            "distinct_question_share": round(len(set(questions)) / len(questions), 4) if questions else 0.0,
            "top_openings": [
                [o, n, round(n / len(pairs), 4)]
                for o, n in sorted(openings.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
            ],
            "openings_exact": True,
            "copied_answer_share": round(sum(p["copied"] for p in pairs) / len(pairs), 4) if pairs else 0.0,
        },
        "duplicates": {
            name: {
                "total": sum(c.values()),
                "distinct": len(c),
                "repeated": sum(n > 1 for n in c.values()),
                "extra_copies": sum(c.values()) - len(c),
            }
            for name, c in (("texts", texts), ("pairs", pair_keys))
        },
    }


def check_against_recount(got: dict, rows: list[dict]) -> None:
    expected = recount(rows)
    for key, value in expected.items():
        assert got[key] == value, key
    verbatim = sum(p["task"] == "verbatim" for r in rows for p in r["pairs"])
    assert got["synthesis"]["fallback_pairs"] == verbatim


def corpus_rows(n_chains: int, seed: int = 0) -> Dataset:
    """A corpus as `mix` publishes it: rendered chains of varied pairs, raw texts, and some exact duplicates."""
    augmented = Dataset.from_dict(
        templify_batch(varied_chains(n_chains, 2, seed), seed=seed), features=templify_features()
    )
    rng = random.Random(seed)
    raw = [f"raw text {rng.randrange(n_chains // 2)} " + "word " * rng.randrange(300) for _ in range(n_chains // 2)]
    return mix(augmented, raw=Dataset.from_dict({"text": raw}), seed=seed)


def test_demo_output_numbers_equal_a_recount(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["augment", "--recipe", "recipes/cpu-demo.yaml", "--model", TINY_SYNTHESIZER, "--dataset", SAMPLE_CORPUS]
    assert main([*args, "--output", str(out), "--no-progress", "--fraction", "0.5"]) == 0
    capsys.readouterr()
    rows = [r for p in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    report = json.loads((out / "run_report.json").read_text())
    got = stats(str(out), progress=False)
    check_against_recount(got, rows)
    assert got["synthesis"]["status"] == report["status"] and got["synthesis"]["rejects"] == report["rejects"]
    assert got == json.loads((out / "stats.json").read_text())  # what the run published is what `stats` reads back
    assert report["output_rows"] == got["rows"] and report["output_tokens"] == got["tokens"]
    assert {"augmented", "raw"} <= set(got["rows"])

    # the CLI: a summary table, the same numbers as JSON, and the figures
    assert main(["stats", str(out), "--no-progress", "--json", "--plots", str(tmp_path / "plots")]) == 0
    assert json.loads(capsys.readouterr().out) == got
    assert main(["stats", str(out), "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert f"rows augmented {got['rows']['augmented']:>12,}".replace(" ", "") in table.replace(" ", "")
    assert "distinct questions" in table and 'opening "' in table
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in (out / "images").iterdir())

    # the card shows every published image, each a real picture, and reads as Markdown
    card = (out / "README.md").read_text()
    check_card(card, {f"images/{p.name}": p.read_bytes() for p in (out / "images").iterdir()})


def check_card(card: str, images: dict[str, bytes]) -> None:
    shown = re.findall(r"!\[[^\]]+\]\((images/[^)]+\.png)\)", card)
    assert shown and sorted(shown) == sorted(images)
    for name, png in images.items():
        check_png(png, name)
    body = card.split("---\n", 2)[2]  # the YAML header is the Hub's, not Markdown
    html = MarkdownIt("commonmark").enable("table").render(body)
    assert html.count("<img ") == len(shown) and all(f'src="{name}"' in html for name in shown)
    assert html.count("<table>") >= 4 and "|---|" not in html and "![" not in html
    assert re.search(r"<h2>Statistics</h2>", html)


def check_png(png: bytes, name: str = "") -> None:
    from matplotlib.image import imread

    assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
    pixels = imread(io.BytesIO(png))
    assert pixels.shape[:2] == (400, 800), name
    ink = np.mean(np.any(pixels[..., :3] < 0.9, axis=-1))  # share of pixels that are not (nearly) white
    assert 0.02 < ink < 0.9, (name, ink)  # drawn on, and not one solid block


def test_100000_rows_equal_a_recount_read_from_several_files(tmp_path, monkeypatch):
    monkeypatch.setattr(stats_module.DistinctCounter.__init__, "__defaults__", (1 << 14,))  # spill often
    corpus = corpus_rows(70_000)  # 70,000 augmented + 35,000 raw rows
    assert len(corpus) >= 100_000
    (tmp_path / "data").mkdir()
    table = corpus.data.table
    for i, start in enumerate(range(0, len(corpus), 30_000)):
        pq.write_table(table.slice(start, 30_000), tmp_path / "data" / f"train-{i:05d}.parquet")
    rows = corpus.to_list()
    got = stats(str(tmp_path), progress=False)
    check_against_recount(got, rows)
    assert got["duplicates"]["texts"]["repeated"] > 0 and got["duplicates"]["pairs"]["repeated"] > 0
    assert "status" not in got["synthesis"]  # no run report there: no synthesis numbers made up
    assert stats(corpus.to_iterable_dataset(), progress=False) == got  # a stream gives the same numbers
    for f in figures(got):
        check_png(f.png, f.name)


def test_openings_beyond_the_cap_are_pruned_and_say_so(monkeypatch):
    monkeypatch.setattr(stats_module, "MAX_OPENINGS", 50)
    pairs = [
        [{"instruction": f"q{i} w{i} x{i}?", "response": "a", "task": "free_form", "copied": False}] for i in range(200)
    ]
    pairs[0] = [{"instruction": "what is it?", "response": "a", "task": "free_form", "copied": True}] * 30
    n = len(pairs)
    batch = {
        "text": [f"t{i}" for i in range(n)],
        "kind": ["augmented"] * n,
        "n_tokens": [5] * n,
        "source": [["s"]] * n,
        "n_pairs": [len(p) for p in pairs],
        "layout": ["classic"] * n,
        "inverted": [False] * n,
        "pairs": pairs,
    }
    acc = stats_module.CorpusStats()
    acc.add(batch)
    got = acc.result()
    assert not got["diversity"]["openings_exact"] and got["diversity"]["top_openings"][0][:2] == ["what is it", 30]


def test_what_is_not_a_published_corpus_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "raw.parquet").parent.mkdir(exist_ok=True)
    pq.write_table(pa.table({"text": ["a raw corpus"]}), tmp_path / "raw.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    (tmp_path / "empty").mkdir()
    cases = {
        str(tmp_path / "empty"): "no data/*.parquet",
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path / "raw.parquet"): "not a corpus published by ipt_data",
        str(tmp_path / "bad.parquet"): "cannot read it",
    }
    for path, needle in cases.items():
        assert main(["stats", path, "--no-progress"]) == 2, path
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err


def test_an_empty_corpus_has_stats_and_no_figures():
    empty = mix(Dataset.from_dict({"text": [], "kind": []}, features=None))
    got = stats(empty, progress=False)
    assert got["rows"] == {} and got["pairs"] == 0 and figures(got) == []


@pytest.mark.parametrize("n", [0, 1, 3])
def test_distinct_counter(tmp_path, n):
    counter = stats_module.DistinctCounter(str(tmp_path), "x", buffer=2)
    items = ["a", "b", "a", "c", "c", "c"][: n * 2]
    counter.add(items)
    c = Counter(items)
    assert counter.result() == {
        "total": len(items),
        "distinct": len(c),
        "repeated": sum(v > 1 for v in c.values()),
        "extra_copies": len(items) - len(c),
    }


def test_statistics_saved_in_parts_and_added_up_equal_one_pass(tmp_path):
    """What each shard does with its rows (`add`, `save`) and the run with the shards' files (`absorb`): the
    numbers of one pass over all the rows, distinct counts taken across the parts, small spill buffers included."""
    rows = corpus_rows(300).to_list()
    rows += rows[:20]  # copies in another part than their first
    whole = stats_module.CorpusStats()
    whole.add({c: [r[c] for r in rows] for c in rows[0]})
    merged = stats_module.CorpusStats()
    for k, part in enumerate((rows[:100], rows[100:101], [], rows[101:])):
        acc = stats_module.CorpusStats()
        for counter in (acc.questions, acc.texts, acc.pairs):
            counter.limit = 7  # spilled to partition files: `save` takes them back
        if part:
            acc.add({c: [r[c] for r in part] for c in rows[0]})
        (tmp_path / f"{k}.npz").write_bytes(acc.to_bytes())
        acc.close()
        assert merged.absorb(tmp_path / f"{k}.npz")
    expected = whole.result()
    assert merged.result() == expected
    check_against_recount(expected, rows)
    assert expected["duplicates"]["texts"]["repeated"] >= 20  # across the parts
    assert not stats_module.CorpusStats().absorb(tmp_path / "missing.npz")


def test_a_runs_statistics_are_its_shards_added_up_and_its_general_rows_counted(tmp_path, monkeypatch, capsys):
    """stats.json adds up what each shard took of its rows as it made them (`shards/NNNNN.stats.npz`) and counts
    only the general rows at the end: the numbers of one pass over the published corpus. A shard whose done marker
    does not name its file (made by an earlier ipt_data) is read again in its place, to the same numbers, even
    with a stale file beside it."""
    import gzip

    # compressed: a worker cannot cut it into portions, so the run's end mixes it in and counts its rows (with
    # general data the workers can read, each shard counts those it takes: tests/test_shard_outputs.py)
    general = tmp_path / "general.jsonl.gz"
    lines = [{"question": f"What is step {i % 9}?", "response": f"Step {i % 9} is to stir."} for i in range(40)]
    general.write_bytes(gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode()))  # repeats
    work = tmp_path / "work"
    args = ["augment", "--recipe", "recipes/cpu-demo.yaml", "--model", TINY_SYNTHESIZER, "--dataset", SAMPLE_CORPUS]
    args += ["--no-progress", "--fraction", "0.5", "--limit", "24", "--max-new-tokens", "60"]
    args += ["--general", str(general), "--general-ratio", "0.5", "--work-dir", str(work)]
    finish_module = __import__("ipt_data.run.finish", fromlist=["CorpusStats"])
    added: list[int] = []

    class Counted(stats_module.CorpusStats):  # the rows the run's end counts itself
        def add(self, batch):
            added.append(len(batch["text"]))
            super().add(batch)

    monkeypatch.setattr(finish_module, "CorpusStats", Counted)
    assert main([*args, "--output", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    got = stats(str(tmp_path / "a"), progress=False)
    assert got == json.loads((tmp_path / "a" / "stats.json").read_text())
    rows = pq.read_table(tmp_path / "a" / "data").to_pylist()
    check_against_recount(got, rows)
    parts = sorted(work.glob("shards/*.stats.npz"))
    assert len(parts) == 3 and set(got["rows"]) == {"augmented", "general", "raw"}
    assert sum(added) == got["rows"]["general"]  # the shards' rows were counted by the shards

    added.clear()
    first = pq.read_metadata(work / "shards" / "00000.parquet").num_rows
    marker = work / "shards" / "00000.done.json"
    done = json.loads(marker.read_text())
    del done["corpus_stats"]  # as an earlier ipt_data wrote it, beside a file of another shard's statistics
    marker.write_text(json.dumps(done))
    parts[0].write_bytes(parts[1].read_bytes())
    assert main([*args, "--output", str(tmp_path / "b")]) == 0  # every shard done: only the end runs again
    assert json.loads((tmp_path / "b" / "stats.json").read_text()) == got
    assert sum(added) == got["rows"]["general"] + first
