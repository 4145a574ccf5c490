"""`ipt-data train-synthesizer` (issue 16): examples, packing and masking token by token, training that resumes
after a kill to the same result, LoRA, evaluation, and a model that `augment` runs on."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipt_data.cli import main
from ipt_data.method import wire
from ipt_data.method.tokenizer import PromptEncoder
from ipt_data.testing.fixture_build import write_tiny_base, write_training_data
from ipt_data.testing.fixtures import TINY_SYNTHESIZER
from ipt_data.train.evaluate import score, token_f1
from ipt_data.train.examples import Example, read_examples, split_examples
from ipt_data.train.packing import IGNORE, pack

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "--max-length", "512", "--max-steps", "12", "--batch-size", "4", "--gradient-accumulation", "1",
    "--learning-rate", "4e-3", "--sparse-vocab", "--save-steps", "4", "--eval-texts", "6",
    "--eval-max-new-tokens", "40", "--no-gradient-checkpointing", "--precision", "fp32", "--eval-fraction", "0.05",
]  # fmt: skip


@pytest.fixture(scope="module")
def encoder():
    return PromptEncoder(TINY_SYNTHESIZER)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train-inputs")
    write_tiny_base(str(folder / "base"))
    write_training_data(str(folder / "train.jsonl"), 400, seed=1)
    return folder


def test_packing_and_masking_token_by_token(encoder):
    a1 = Example("Anna lives in Oslo. </s> is not a token here.", (("Where does Anna live?", "In Oslo."),), "a")
    a2 = Example("Ben is a baker.", (("What is Ben?", "A baker."), ("Is Ben a baker?", "Yes.")), "a")
    b1 = Example("Cats purr.", (("What do cats do?", "They purr."),), "b")
    long = Example("word " * 600, (("Long?", "Yes."),), "b")
    sizes = {e: len(encoder.demo_ids([(e.text, e.pair_dicts())])[0]) for e in (a1, a2, b1)}
    packed = pack(encoder, [a1, b1, a2, long], max_length=sizes[a1] + sizes[a2], seed=0)
    assert packed.rejects == {"too_long": 1} and packed.examples == 3  # never cut; counted
    assert len(packed.sequences) == 2  # a1 + a2 together (one task), b1 alone
    by_len = {len(s["input_ids"]): s for s in packed.sequences}
    seq_a, seq_b = by_len[sizes[a1] + sizes[a2]], by_len[sizes[b1]]
    order = (
        [a1, a2] if seq_a["input_ids"][: sizes[a1]] == encoder.demo_ids([(a1.text, a1.pair_dicts())])[0] else [a2, a1]
    )
    for seq, examples in ((seq_a, order), (seq_b, [b1])):
        ids, labels = [], []
        for e in examples:
            context = encoder.context_ids([e.text])[0]
            full = encoder.demo_ids([(e.text, e.pair_dicts())])[0]
            assert full[: len(context)] == context and full[0] == encoder.bos_id and full[-1] == encoder.eos_id
            ids += full
            labels += [IGNORE] * len(context) + full[len(context) :]
            # what carries a loss is exactly the pairs and the closing </s>
            assert (
                encoder.decode(full[len(context) :], skip_special_tokens=False).strip()
                == (wire.render_pairs(e.pair_dicts()).strip() + " </s>")
                or encoder.decode(full[len(context) : -1]).strip() == wire.render_pairs(e.pair_dicts()).strip()
            )
        assert seq["input_ids"] == ids and seq["labels"] == labels
    assert seq_a["input_ids"].count(encoder.bos_id) == 2 and seq_a["input_ids"].count(encoder.eos_id) == 2
    bos_positions = [i for i, t in enumerate(seq_a["input_ids"]) if t == encoder.bos_id]
    assert all(seq_a["labels"][i] == IGNORE for i in bos_positions)
    assert packed.label_tokens == sum(label != IGNORE for s in packed.sequences for label in s["labels"])


def test_examples_from_our_shape_and_from_context_qa_rows():
    rows = [
        {
            "text": "T1",
            "pairs": [{"instruction": "q", "response": "a"}, ["q2", "a2"], {"instruction": "", "response": "x"}],
        },
        {"text": "", "pairs": [["q", "a"]]},
        {"text": "T2", "pairs": []},
    ]
    examples, rejects, n = read_examples(rows)
    assert n == 3 and examples == [Example("T1", (("q", "a"), ("q2", "a2")))]
    assert rejects == {"malformed_pair": 1, "empty_text": 1, "no_pairs": 1}
    squad = [
        {"context": "C1", "question": "Q1?", "answers": {"text": ["A1"], "answer_start": [0]}, "title": "t"},
        {"context": "C2", "question": "Q3?", "answers": "A3", "title": "t"},
        {"context": "C1", "question": "Q2?", "answers": {"text": ["A2", "A2b"]}, "title": "t"},
        {"context": "C1", "question": "Q4?", "answers": {"text": []}, "title": "t"},  # unanswerable
    ]
    mapping = {"text": "context", "question": "question", "answer": "answers", "task": "title"}
    examples, rejects, n = read_examples(squad, mapping)
    assert n == 4
    assert examples == [Example("C1", (("Q1?", "A1"), ("Q2?", "A2")), "t"), Example("C2", (("Q3?", "A3"),), "t")]
    assert rejects == {"no_answer": 1}
    many = [Example(f"text {i}", (("q", "a"),)) for i in range(1000)]
    train, held = split_examples(many, 0.1, seed=0)
    assert 60 < len(held) < 140 and len(train) + len(held) == 1000
    assert split_examples(many[::-1], 0.1, seed=0)[1] == held[::-1]  # by text, not by position


def test_scores():
    examples = [Example("t", (("Where does Anna live?", "In Oslo"),)), Example("u", (("Who?", "Ben"),))]
    generated = [[{"instruction": "Where does Anna live?", "response": "in oslo."}], []]
    s = score(examples, generated, [1, 0])
    assert s["texts_with_pairs"] == 0.5 and s["answer_exact_match"] == 0.5 and s["parse_failure_rate"] == 0.5
    assert token_f1("a b c", "a b d") == pytest.approx(2 / 3)


def run_cli(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["train-synthesizer", "--base", str(inputs / "base"), "--data", str(inputs / "train.jsonl"),
            "--output", str(out), *QUICK, *extra]  # fmt: skip


def test_a_killed_run_resumes_to_the_same_model_and_evaluation(inputs, tmp_path, capsys):
    from ipt_data.train.loop import last_complete_checkpoint

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert main(run_cli(inputs, whole)) == 0
    capsys.readouterr()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "ipt_data", *run_cli(inputs, resumed)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = resumed / "checkpoints" / "checkpoint-8"
    deadline = time.time() + 240
    while _step(last_complete_checkpoint(checkpoint.parent)) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-run: 8 of 12 steps written, maybe while it writes the next checkpoint
    proc.wait()
    assert not (resumed / "train_report.json").exists(), "the run finished before it could be killed"
    assert main(run_cli(inputs, resumed)) == 0
    a, b = (json.loads((d / "train_report.json").read_text()) for d in (whole, resumed))
    assert a["evaluation"] == b["evaluation"]
    assert (whole / "model.safetensors").read_bytes() == (resumed / "model.safetensors").read_bytes()
    assert not (resumed / "checkpoints").exists()  # a finished run leaves only the model


def _step(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


def test_a_checkpoint_cut_short_by_a_kill_is_not_resumed_from(tmp_path):
    from ipt_data.train.loop import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((4, "{}"), (8, "{}"), (12, None)):  # killed while writing checkpoint-12
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"")
        if state is not None:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    (tmp_path / "checkpoint-12" / "trainer_state.json").write_text('{"best_metric": null, "log_hi')  # cut short
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")


def test_the_model_runs_through_augment_and_its_card_has_the_evaluation(inputs, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(run_cli(inputs, out, "--eval-steps", "8")) == 0
    stdout = capsys.readouterr().out  # the Trainer's loss lines, then the report
    printed = json.loads(stdout[stdout.index('{\n "output"') :])
    report = json.loads((out / "train_report.json").read_text())
    assert printed["evaluation"] == report["evaluation"] and set(report["evaluation"]) == {"zero_shot", "with_demos"}
    assert [h["step"] for h in report["evaluation_history"]] == [8]
    card = (out / "README.md").read_text()
    assert "answer token F1" in card and "learning_rate" in card and "train.jsonl" in card
    assert report["hyper_parameters"]["steps_run"] == 12 and report["hyper_parameters"]["precision"] == "fp32"
    assert json.loads((out / "config.json").read_text())["use_cache"] is True
    assert main(run_cli(inputs, out)) == 2  # a finished model is not replaced by accident
    assert "--overwrite" in capsys.readouterr().err
    for name in ("tokenizer.json", "config.json", "generation_config.json", "model.safetensors"):
        assert (out / name).exists(), name
    assert (out / "tokenizer.json").read_bytes() == (inputs / "base" / "tokenizer.json").read_bytes()
    args = ["augment", "--recipe", "recipes/cpu-demo.yaml", "--model", str(out), "--engine", "hf", "--limit", "4"]
    assert main([*args, "--output", str(tmp_path / "aug"), "--no-progress"]) == 0
    assert "all input rows accounted for: True" in capsys.readouterr().out


def test_lora_trains_adapters_and_saves_merged_weights(inputs, tmp_path, capsys):
    pytest.importorskip("peft")
    out = tmp_path / "lora"
    extra = ["--lora", "--lora-r", "4", "--max-steps", "3", "--eval-texts", "2"]
    args = [a for a in run_cli(inputs, out, *extra) if a != "--sparse-vocab"]
    assert main(args) == 0
    capsys.readouterr()
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k]  # merged into the base weights


def test_missing_options_and_bad_data_are_one_line_errors(inputs, tmp_path, capsys):
    assert main(["train-synthesizer", "--data", str(inputs / "train.jsonl")]) == 2
    assert "needs --base" in capsys.readouterr().err
    data = ["--data", str(inputs / "train.jsonl")]
    cases = {
        "does not exist (--base)": ["--base", str(tmp_path / "nope"), *data],
        "no usable tokenizer": ["--base", str(tmp_path), *data],
        "no column 'context', 'q', 'answers' (for text, question, answer)": [
            "--base", str(inputs / "base"), *data, "--columns", '{"text": "context", "question": "q"}',
        ],
        "unknown keys ['titel']": ["--base", str(inputs / "base"), *data, "--columns", '{"titel": "x"}'],
    }  # fmt: skip
    for needle, args in cases.items():
        assert main(["train-synthesizer", *args]) == 2, needle
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    squad = tmp_path / "squad.jsonl"
    squad.write_text(json.dumps({"context": "C", "question": "Q?", "answers": {"text": ["A"]}}) + "\n")
    assert main(["train-synthesizer", "--base", str(inputs / "base"), "--data", str(squad)]) == 2
    assert "name them with --columns" in capsys.readouterr().err  # a hint at the mapping it needs
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"text": "x", "pairs": []}) + "\n")
    assert main(["train-synthesizer", "--base", str(inputs / "base"), "--data", str(empty)]) == 2
    assert "no usable training example" in capsys.readouterr().err
