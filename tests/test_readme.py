"""The README's command lines: every `ipt-data augment` / `python -m ipt_data augment` line parses with the CLI
and builds a valid config from its recipe; the offline one runs exactly as written."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ipt_data.cli import build_parser
from ipt_data.config import AugmentConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def command_lines() -> list[str]:
    """The augment command lines of the README's bash blocks (continuation lines joined)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if re.match(r"(ipt-data|python -m ipt_data) augment\b", line):
                lines.append(line)
    return lines


def argv_of(line: str) -> list[str]:
    words = shlex.split(line)
    return words[1:] if words[0] == "ipt-data" else words[3:]


def test_the_readme_has_command_lines():
    assert len(command_lines()) >= 4


@pytest.mark.parametrize("line", command_lines())
def test_every_readme_command_line_parses_into_a_config(line, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes/... as in the README
    args = build_parser().parse_args(argv_of(line))
    config = AugmentConfig.from_recipe(args.recipe, **{n: getattr(args, n) for n in AugmentConfig.names()})
    assert config.output and config.dataset


def test_the_offline_readme_line_runs_as_written(tmp_path):
    (line,) = [x for x in command_lines() if "cpu-demo" in x]
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")  # the README's paths, from a scratch folder
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    words = shlex.split(line)
    cmd = [sys.executable, "-m", "ipt_data", *words[1:]]  # `ipt-data` is this entry point
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "all input rows accounted for: True" in result.stdout
    assert table_counts(demo_block()) == table_counts(result.stdout), (
        "the README's demo table is not what the demo prints (rerun `make demo` on a fresh ./out/demo, paste its table)"
    )
    report = json.loads((tmp_path / "out" / "demo" / "run_report.json").read_text())
    assert report["rows"]["in"] == 24 and report["accounted"]
    import pyarrow.parquet as pq

    rows = [r for p in (tmp_path / "out" / "demo" / "data").glob("*.parquet") for r in pq.read_table(p).to_pylist()]
    assert rows and all(r["id"] and all(i.startswith("sample-") for i in r["id"]) for r in rows)  # --keep-columns id


def demo_block() -> str:
    """The README's `make demo` table: the text block that holds a run table."""
    (block,) = [b for b in re.findall(r"```text\n(.*?)```", README, re.S) if b.startswith("input rows")]
    return block


def table_counts(text: str) -> list[str]:
    """The count lines of the first run table in `text` (from `input rows` to `all input rows accounted for`),
    spaces collapsed; seconds vary from run to run and are left out."""
    lines = text.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("input rows")) :]
    table = lines[: next(i for i, line in enumerate(lines) if line.startswith("all input rows")) + 1]
    return [" ".join(line.split()) for line in table if not line.startswith("seconds ")]


def test_make_demo_and_the_readme_offline_line_do_not_collide():
    """`make demo` and the README's offline line write the same folder with the same settings (the folder of one
    is the other's to rerun), so neither is refused after the other."""
    (line,) = [x for x in command_lines() if "cpu-demo" in x]
    dry = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    (command,) = [x for x in dry.splitlines() if "ipt-data augment" in x]
    configs = []
    for argv in (shlex.split(command.split("ipt-data", 1)[1]), argv_of(line)):
        args = build_parser().parse_args(argv)
        names = AugmentConfig.names()
        configs.append(AugmentConfig.from_recipe(str(ROOT / args.recipe), **{n: getattr(args, n) for n in names}))
    demo, readme = configs
    assert demo.output != readme.output or demo.output_fingerprint() == readme.output_fingerprint()


def test_the_readme_make_augment_line_builds_a_valid_command():
    (line,) = re.findall(r"`(make augment DATASET=[^`]+)`", README)
    dry = subprocess.run([*shlex.split(line), "-n"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    (command,) = [x for x in dry.splitlines() if "ipt-data augment" in x]
    argv = shlex.split(command.split("ipt-data", 1)[1])
    args = build_parser().parse_args(argv)
    config = AugmentConfig.from_recipe(str(ROOT / args.recipe), **{n: getattr(args, n) for n in AugmentConfig.names()})
    assert (config.dataset, config.output, config.rounds) == ("me/raw-corpus", "hf://datasets/me/out", 3)


def readme_lines(pattern: str) -> list[str]:
    """The README bash-block lines (continuations joined, comments dropped) that match `pattern`."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if re.search(pattern, line):
                lines.append(line)
    return lines


def test_every_readme_train_synthesizer_line_parses_into_a_config(monkeypatch):
    from ipt_data.train.config import TrainConfig

    monkeypatch.chdir(ROOT)
    lines = readme_lines(r"\btrain-synthesizer --")
    assert len(lines) >= 4  # plain, accelerate, torchrun, context-QA
    for line in lines:
        words = shlex.split(line)
        args = build_parser().parse_args(words[words.index("train-synthesizer") :])
        config = TrainConfig.from_recipe(args.recipe, **{n: getattr(args, n) for n in TrainConfig.names()})
        assert config.base and config.data and config.output, line
    (squad,) = [x for x in lines if "--columns" in x]
    assert TrainConfig.from_recipe(None, **{"base": "b", "data": "d", "columns": json.loads(shlex.split(squad)[-3])})


def test_the_readme_stats_lines_run_as_written(tmp_path):
    (line,) = readme_lines(r"^ipt-data stats ")
    (make_line,) = readme_lines(r"^make stats ")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    demo = [sys.executable, "-m", "ipt_data", "augment", "--recipe", str(ROOT / "recipes" / "cpu-demo.yaml")]
    subprocess.run([*demo, "--output", "out", "--no-progress"], cwd=tmp_path, env=env, check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "ipt_data", *shlex.split(line)[1:]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows augmented" in result.stdout and len(list((tmp_path / "out-plots").glob("*.png"))) == 6
    dry = subprocess.run([*shlex.split(make_line), "-n"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    (command,) = [x for x in dry.splitlines() if "ipt-data stats" in x]
    assert shlex.split(command.split("ipt-data", 1)[1]) == ["stats", "./out", "--plots", "./out-plots"]


def python_block(marker: str) -> str:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if marker in b]
    return block


def test_the_python_walk_through_puts_every_text_in_once(tmp_path, monkeypatch):
    """The Python API, Templify and Mix blocks, run in order as written (the tiny fixture as the model, the bundled
    corpus as `corpus.jsonl`): every input text is in the mixed corpus exactly once, converted or raw."""
    from ipt_data.config import SAMPLE_CORPUS

    api = python_block("ipt.synthesize_batch")
    offline = api.replace('"instruction-pretrain/instruction-synthesizer"', "ipt.fixtures.TINY_SYNTHESIZER", 1)
    assert offline != api, "the walk-through names its model on one line"
    (tmp_path / "corpus.jsonl").write_text(Path(SAMPLE_CORPUS).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for code in (offline, python_block("pt = ds.map("), python_block("ipt.mix(pt, raw=rest")):
        exec(compile(code, "README.md", "exec"), ns)
    inputs = [json.loads(line)["text"] for line in Path(SAMPLE_CORPUS).read_text(encoding="utf-8").splitlines()]
    texts = ns["corpus"]["text"]
    assert len(set(texts)) == len(texts), "a text appears twice in the walk-through's corpus"
    times = {i: sum(text in t for t in texts) for i, text in enumerate(inputs)}
    assert times == {i: 1 for i in range(len(inputs))}, f"input texts not in the corpus exactly once: {times}"
    kinds = ns["corpus"]["kind"]
    assert 0 < kinds.count("augmented") and kinds.count("raw") == len(ns["rest"]) > 0
