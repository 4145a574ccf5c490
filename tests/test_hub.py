"""Publishing to the Hub, against tests/hub_server.py on 127.0.0.1 (no real credentials, loopback only).

huggingface_hub reads HF_ENDPOINT when imported, so each scenario runs in a child process whose
environment points at the local server.
"""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hub_server import LocalHub, Repo
from test_stats import check_card

from ipt_data.config import SAMPLE_CORPUS
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_local_test_token_not_real"


def run_child(hub: LocalHub, tmp_path: Path, code: str, **env_extra: str) -> str:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1",
        **env_extra,
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


@pytest.fixture()
def hub():
    with LocalHub() as server:
        yield server


def test_push_private_with_card_and_read_back(hub, tmp_path):
    out = run_child(
        hub,
        tmp_path,
        """
        from datasets import Dataset, load_dataset
        from ipt_data.sinks import publish
        ds = Dataset.from_dict({"text": [f"text {i}" for i in range(45)], "kind": ["raw"] * 45, "n_tokens": [2] * 45})
        card = ("---\\nconfigs:\\n- config_name: default\\n  data_files:\\n  - split: train\\n"
                "    path: data/train-*\\n---\\n# Card\\n")
        print(publish(ds, "hf://datasets/tester/corpus", card=card, private=True, max_shard_rows=20))
        back = load_dataset("tester/corpus", split="train")
        assert back["text"] == ds["text"], back["text"][:5]
        print("READ-BACK-OK")
    """,
    )
    assert "hf://datasets/tester/corpus" in out and "READ-BACK-OK" in out
    repo = hub.state.repos["tester/corpus"]
    assert repo.private
    data = sorted(f for f in repo.files if f.startswith("data/"))
    assert sorted(repo.files) == [".ipt_publish.json", "README.md", *data] and len(data) == 3
    assert all(f.startswith(f"data/train-{i:05d}-of-00003-") for i, f in enumerate(data))
    assert repo.commits == 1  # data, card and manifest in one commit: never data without its card
    card = repo.files["README.md"].decode()
    assert card.endswith("# Card\n") and "dataset_info:" in card and "num_examples: 45" in card
    assert f"Bearer {TOKEN}" in hub.state.authorizations  # the token came from the environment


def test_an_interrupted_push_resumes_without_sending_blobs_again(hub, tmp_path):
    hub.state.fail_next_commits = 1  # the first commit dies after every shard was uploaded
    run_child(
        hub,
        tmp_path,
        """
        from datasets import Dataset
        from ipt_data.sinks import publish
        ds = Dataset.from_dict({"text": [f"row {i}" for i in range(60)]})
        publish(ds, "hf://datasets/tester/resumed", max_shard_rows=20)
    """,
    )
    repo = hub.state.repos["tester/resumed"]
    assert len([f for f in repo.files if f.endswith(".parquet")]) == 3
    assert hub.state.lfs_uploads == 3  # the retry found the blobs on the server and sent none again


def test_cli_augment_from_a_hub_dataset_to_the_hub(hub, tmp_path):
    out = run_child(
        hub,
        tmp_path,
        f"""
        import json, subprocess, sys
        from datasets import Dataset, load_dataset
        from ipt_data.sinks import publish
        raw = [json.loads(line)["text"] for line in open({SAMPLE_CORPUS!r})]
        publish(Dataset.from_dict({{"text": raw}}), "hf://datasets/tester/raw")  # the input, read by its Hub name
        cmd = [sys.executable, "-m", "ipt_data", "augment", "--recipe", "recipes/cpu-demo.yaml",
               "--dataset", "tester/raw", "--model", {TINY_SYNTHESIZER!r}, "--limit", "8", "--shard-size", "4",
               "--work-dir", {str(tmp_path / "work")!r}, "--output", "hf://datasets/tester/demo", "--no-progress"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        print(run.stdout, run.stderr)  # the logs, checked for the token below
        back = load_dataset("tester/demo", split="train")
        print("ROWS", len(back), sorted(set(back["kind"])))
        import ipt_data
        print("STATS", json.dumps(ipt_data.stats("hf://datasets/tester/demo", progress=False)))
    """,
    )
    assert "ROWS" in out and "augmented" in out and "all input rows accounted for: True" in out
    assert TOKEN not in out  # never in the logs ...
    for path in (tmp_path / "work").rglob("*"):  # ... nor in the checkpoints and the local report
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes()
    repo = hub.state.repos["tester/demo"]
    card = repo.files["README.md"].decode()
    assert "Instruction Pre-Training" in card and "ipt-data augment" in card and TOKEN not in card
    report = json.loads(repo.files["run_report.json"])
    assert report["rows"]["in"] == 8 and report["accounted"]
    # the statistics and figures came in the same commit as the data, and read back from the Hub the same
    numbers = json.loads(out.split("STATS ", 1)[1].splitlines()[0])
    assert numbers == json.loads(repo.files["stats.json"]) and numbers["rows"] == report["output_rows"]
    check_card(card, {name: data for name, data in repo.files.items() if name.startswith("images/")})
    assert repo.commits == 1  # data, card, report, stats and images: one commit
    # each data file's content was sent by the worker that wrote it, before the commit began (its own look at
    # what to upload names the final files), and never again
    data = [hashlib.sha256(repo.files[n]).hexdigest() for n in sorted(repo.files) if n.startswith("data/")]
    events = hub.state.events
    begins = next(i for i, (kind, what) in enumerate(events) if kind == "preupload" and "README.md" in what)
    puts = [what for kind, what in events if kind == "put"]
    assert len(data) == 2 and all(puts.count(oid) == 1 for oid in data)
    assert all(events.index(("put", oid)) < begins for oid in data)


def test_a_foreign_hub_dataset_is_refused_and_overwrite_keeps_unrelated_files(hub, tmp_path):
    out = run_child(
        hub,
        tmp_path,
        """
        from datasets import Dataset
        from huggingface_hub import HfApi
        from ipt_data.errors import ConfigError, OutputExistsError
        from ipt_data.sinks import publish
        api = HfApi()
        api.create_repo("tester/theirs", repo_type="dataset")
        for path, data in (("data/train-00000-of-00001.parquet", b"their rows"), ("README.md", b"their card"),
                           ("notes/keep.txt", b"their notes")):
            api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id="tester/theirs", repo_type="dataset")
        ds = Dataset.from_dict({"text": ["a", "b"], "kind": ["raw", "raw"], "n_tokens": [1, 1]})
        try:
            publish(ds, "hf://datasets/tester/theirs", card="---\\n---\\n# ours\\n")
        except OutputExistsError as exc:
            print("REFUSED", exc)
        publish(ds, "hf://datasets/tester/theirs", card="---\\n---\\n# ours\\n", overwrite=True)
        publish(ds.select([0]), "hf://datasets/tester/theirs", card="---\\n---\\n# ours again\\n")  # ours now
        try:
            publish(ds, "hf://datasets/not a repo id")
        except ConfigError as exc:
            print("INVALID", exc)
        """,
    )
    assert "REFUSED" in out and "--overwrite" in out and "INVALID" in out
    repo = hub.state.repos["tester/theirs"]
    data = [f for f in repo.files if f.startswith("data/")]
    assert repo.files["notes/keep.txt"] == b"their notes" and repo.files["README.md"].endswith(b"# ours again\n")
    assert len(data) == 1 and "data/train-00000-of-00001.parquet" not in data


def test_a_token_that_may_not_write_fails_the_preflight_in_seconds(hub, tmp_path):
    hub.state.read_only.add("Bearer hf_read_only_token_xyz")
    out = run_child(
        hub,
        tmp_path,
        f"""
        import os, subprocess, sys, time
        env = {{**os.environ, "HF_TOKEN": "hf_read_only_token_xyz"}}
        cmd = [sys.executable, "-m", "ipt_data", "augment", "--recipe", "recipes/cpu-demo.yaml", "--limit", "4",
               "--work-dir", {str(tmp_path / "work")!r}, "--output", "hf://datasets/tester/nope", "--no-progress"]
        t = time.time()
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        print("RC", run.returncode, "SECONDS", round(time.time() - t), run.stderr.strip().splitlines()[-1])
        """,
    )
    assert "RC 2" in out and "the Hub refused (403)" in out and "hf_read_only" not in out
    assert int(out.split("SECONDS ")[1].split()[0]) < 60
    assert not list((tmp_path / "work" / "shards").glob("*.parquet"))  # no synthesis happened


def test_train_synthesizer_pushes_the_model_folder_to_the_hub(hub, tmp_path):
    run_child(
        hub,
        tmp_path,
        f"""
        import os, sys
        sys.path.insert(0, "tests")
        from ipt_data.cli import main
        from ipt_data.testing.fixture_build import write_tiny_base, write_training_data
        from test_train import QUICK
        os.chdir({str(tmp_path)!r})
        write_tiny_base("base")
        write_training_data("train.jsonl", 200)
        args = ["train-synthesizer", "--base", "base", "--data", "train.jsonl", "--output", "hf://tester/synth"]
        assert main([*args, *QUICK, "--max-steps", "4", "--eval-texts", "2"]) == 0
        """,
    )
    repo = hub.state.repos["tester/synth"]
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "train_report.json"} <= set(repo.files)
    assert not [f for f in repo.files if f.startswith("checkpoints/")] and repo.commits == 1
    assert TOKEN not in repo.files["README.md"].decode()


def augment_runs(hub: LocalHub, tmp_path: Path, runs: list[tuple[str, ...]], **env_extra: str) -> list[dict]:
    """Each run `(repo, *flags)` through `ipt_data.cli.main` in one child process (one work folder): its exit
    code, its stderr, and the work folder's shards after it. The retries' pauses are skipped, not their count."""
    work = str(tmp_path / "work")
    out = run_child(
        hub,
        tmp_path,
        f"""
        import contextlib, io, json, pathlib, types
        import ipt_data.sinks.base as base
        base.time = types.SimpleNamespace(sleep=lambda seconds: None)
        from ipt_data.cli import main
        for repo, *flags in {runs!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(["augment", "--recipe", "recipes/cpu-demo.yaml", "--limit", "8", "--work-dir", {work!r},
                           "--output", f"hf://datasets/tester/{{repo}}", "--no-progress", *flags])
            report = pathlib.Path({work!r}, "run_report.json")
            shards = json.loads(report.read_text())["shards"] if report.exists() else None
            print("RUN", json.dumps({{"rc": rc, "err": err.getvalue(), "shards": shards}}))
        """,
        **env_extra,
    )
    results = [json.loads(line[len("RUN ") :]) for line in out.splitlines() if line.startswith("RUN ")]
    for r in results:
        assert "Traceback" not in r["err"], r["err"]
        r["line"] = (r["err"].strip().splitlines() or [""])[-1]
    return results


def test_private_on_an_existing_public_repo_is_refused_before_synthesis_or_published_public_with_a_warning(
    hub, tmp_path
):
    hub.state.repos["tester/pub"] = Repo("tester/pub", private=False)
    refused, overwritten = augment_runs(hub, tmp_path, [("pub", "--private"), ("pub", "--private", "--overwrite")])
    assert refused["rc"] == 2 and refused["line"].startswith("ipt-data: error: hf://datasets/tester/pub is a public")
    assert "--overwrite" in refused["line"] and refused["shards"] is None  # nothing synthesized
    assert overwritten["rc"] == 0
    repo = hub.state.repos["tester/pub"]
    assert not repo.private and repo.commits == 1 and "README.md" in repo.files
    assert "hf://datasets/tester/pub is public and stays public" in (tmp_path / "work" / "run.log").read_text()
    assert "ipt-data: warning: hf://datasets/tester/pub is public and stays public" in overwritten["err"]


def test_a_hub_refusing_or_failing_the_push_is_one_line_and_the_rerun_publishes_without_synthesis(hub, tmp_path):
    hub.state.commit_failures = [403] + [500] * 5  # a token that lost its rights; then a Hub failing every retry
    forbidden, failing, rerun = augment_runs(hub, tmp_path, [("flaky",)] * 3)
    assert forbidden["rc"] == 2 and "pushing to hf://datasets/tester/flaky: the Hub refused (403)" in forbidden["line"]
    assert failing["rc"] == 2 and "pushing to hf://datasets/tester/flaky failed after 5 attempts" in failing["line"]
    for failed in (forbidden, failing):
        assert "the repo is unchanged: run the same command again" in failed["line"]
    assert hub.state.commit_failures == []  # the 403 was not retried; the 500s were, five times
    assert rerun["rc"] == 0 and rerun["shards"]["reused"] == rerun["shards"]["total"] > 0
    repo = hub.state.repos["tester/flaky"]
    assert repo.commits == 1 and any(f.startswith("data/") for f in repo.files)


def test_a_hub_that_cannot_create_the_repo_is_offline_or_down_fails_the_preflight_in_one_line(hub, tmp_path):
    hub.state.refuse_create = 400
    (refused,) = augment_runs(hub, tmp_path / "refused", [("new",)])
    assert refused["rc"] == 2 and "You have reached the maximum number of repos" in refused["line"]
    (offline,) = augment_runs(hub, tmp_path / "offline", [("new",)], HF_HUB_OFFLINE="1")
    assert offline["rc"] == 2 and "HF_HUB_OFFLINE is set" in offline["line"]
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    (down,) = augment_runs(hub, tmp_path / "down", [("new",)], HF_ENDPOINT=endpoint)
    assert down["rc"] == 2 and "checking hf://datasets/tester/new failed after 5 attempts" in down["line"]
    for r in (refused, offline, down):
        assert r["line"].startswith("ipt-data: error: ") and r["shards"] is None
    assert "tester/new" not in hub.state.repos


def test_a_benchmark_on_the_hub_is_read_with_its_config_split_and_columns(hub, tmp_path):
    """`--decontaminate user/name?config=..&split=..&question=..&answer=..`: a Hub dataset, read through the
    same `load_source` as inputs, indexed, and a pasted question found."""
    out = run_child(
        hub,
        tmp_path,
        f"""
        from datasets import Dataset
        from ipt_data.quality.benchmarks import BenchmarkIndex, parse_specs
        q = "Which river flows through the old town of Kessel and past the stone bridge built in the year 1620"
        ds = Dataset.from_dict({{"prompt": [q, "An unrelated question about bees and their waggle dance inside hives"],
                                "target": ["the Alder", "it points to flowers"]}})
        ds.push_to_hub("tester/quiz", config_name="hard", split="test")
        specs = parse_specs("tester/quiz?config=hard&split=test&question=prompt&answer=target&name=quiz")
        index = BenchmarkIndex.build(specs, {str(tmp_path / "index")!r})
        text = "Guides ask: which river flows through the OLD town of Kessel, and past the stone bridge?"
        hits = index.find([text + " built in the year 1620", "nothing to see here"])
        print("HITS", [[h.benchmark for h in found] for found in hits], index.summary()["benchmarks"][0]["items"])
    """,
    )
    assert "HITS [['quiz'], []] 2" in out
