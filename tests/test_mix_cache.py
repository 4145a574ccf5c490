"""Issue 27, case 8: a run leaves no hidden cache. Its mix once wrote an Arrow copy of the shards (and the
shuffled corpus) into the Hugging Face datasets cache and never removed it; now those tables live in the work
folder while the run ends and are removed with it."""

import json
import os
import subprocess
import sys

from datasets import Dataset

from ipt_data.corpus.mixing import MIX_FEATURES, _flattened
from ipt_data.testing.fixtures import TINY_SYNTHESIZER


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_a_run_leaves_nothing_in_the_datasets_cache(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    texts = [f"Text {i}. The river {i} runs to the sea, and the town beside it trades in salt." for i in range(6)]
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"question": f"q{i}?", "response": f"a {i}."}) + "\n" for i in range(9)))
    cache = tmp_path / "hf-datasets-cache"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache)}
    cmd = [
        sys.executable, "-m", "ipt_data", "augment", "--dataset", str(corpus), "--model", TINY_SYNTHESIZER,
        "--engine", "hf", "--max-new-tokens", "20", "--rounds", "2", "--fraction", "0.5", "--shard-size", "3",
        "--general", str(general), "--output", str(tmp_path / "out"), "--no-progress",
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list((tmp_path / "out" / "data").glob("*.parquet"))
    assert files_under(cache) == [], "the run wrote into the datasets cache"
    work = tmp_path / "out.work"
    assert not list(work.glob("mix-*")), "the mixing tables outlived the run"
    left = [p.name for p in (work / "general").iterdir()]
    assert left == ["rejects.jsonl"], f"the general data's copy outlived the run: {left}"


def test_the_flattened_corpus_is_the_table_flatten_indices_writes(tmp_path):
    """The same rows, chunks and sizes as `datasets`' own `flatten_indices`, from a file or from memory."""
    rows = {
        "text": [f"t{i}" * (i % 5 + 1) for i in range(2500)],
        "kind": ["augmented" if i % 3 else "raw" for i in range(2500)],
        "n_tokens": list(range(2500)),
        "source": [[f"{i}:0"] for i in range(2500)],
        "n_pairs": [i % 2 for i in range(2500)],
        "layout": ["classic"] * 2500,
        "inverted": [i % 7 == 0 for i in range(2500)],
        "pairs": [[{"instruction": f"q{i}", "response": "a", "task": "free_form", "copied": False}] * (i % 2)
                  for i in range(2500)],
    }  # fmt: skip
    in_memory = Dataset.from_dict(rows, features=MIX_FEATURES)
    in_memory.save_to_disk(str(tmp_path / "saved"))
    from datasets import load_from_disk

    for ds in (in_memory, load_from_disk(str(tmp_path / "saved"))):
        shuffled = ds.shuffle(seed=4)
        want, got = shuffled.flatten_indices(), _flattened(shuffled)
        assert got.features == want.features and got.data.nbytes == want.data.nbytes
        assert [len(c) for c in got.data.column(0).chunks] == [len(c) for c in want.data.column(0).chunks]
        assert got.data.table.equals(want.data.table)
        assert bool(got.cache_files) == bool(ds.cache_files)
