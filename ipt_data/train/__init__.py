"""`train_synthesizer`: tune a causal LM into an instruction synthesizer (`ipt-data train-synthesizer`).

The tuning, as the paper describes it: the base model (the authors used Mistral-7B-v0.1) learns to write the
instruction-response pairs of a raw text in exactly the wire format of SPEC 1-2, each example
`<s> <CON> {text} </CON>\\n\\n{pairs}</s>`; several examples of one task are concatenated into one sequence,
so it learns the few-shot (M-round) behaviour; the loss is on the pairs and the closing `</s>` only.

Steps: read the examples (`examples`), hold a seeded share out, pack the rest (`packing`), train
(`loop`, resumable), save a model folder that `synthesize_batch(model=DIR)` uses directly (weights, the
tokenizer files as they were, a greedy generation config, a model card), evaluate it on the held-out texts
(`evaluate`), and push it to the Hub when the output is `hf://<user>/<name>`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ipt_data.errors import InputError, ModelUnavailableError, OutputExistsError
from ipt_data.run.inputs import ensure_model_available
from ipt_data.train.config import TrainConfig
from ipt_data.train.evaluate import evaluate
from ipt_data.train.examples import Example, check_columns, read_examples, split_examples
from ipt_data.train.model_card import model_card
from ipt_data.train.packing import pack

log = logging.getLogger(__name__)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
REPORT = "train_report.json"

__all__ = ["Example", "TrainConfig", "train_synthesizer"]


def _encoder(source: str):
    """The prompt encoder of the model's own tokenizer file, or a one-line error."""
    from ipt_data.method.tokenizer import PromptEncoder

    try:
        return PromptEncoder(source)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelUnavailableError(
            f"{source}: no usable tokenizer (a tokenizer.json is needed; give one with --tokenizer): {exc}"
        ) from exc


def _local_output(output: str) -> tuple[Path, str | None]:
    """`(folder to write, Hub repo id or None)`."""
    if output.startswith("hf://"):
        repo = output[len("hf://") :].removeprefix("models/")
        return Path(".ipt-train") / repo.replace("/", "--"), repo
    return Path(output), None


def _copy_tokenizer(source: str, out: Path) -> None:
    from ipt_data.method.tokenizer import tokenizer_file

    path = tokenizer_file(source)
    if path is None:
        raise InputError(f"{source}: no tokenizer.json to save with the model (ipt_data encodes with that file)")
    for name in TOKENIZER_FILES:
        candidate = Path(path).with_name(name)
        if candidate.exists():
            shutil.copyfile(candidate, out / name)


def _save(model, cfg: TrainConfig, encoder, out: Path) -> None:
    import torch

    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
    model.config.bos_token_id, model.config.eos_token_id = encoder.bos_id, encoder.eos_id
    model.generation_config.bos_token_id = encoder.bos_id
    model.generation_config.eos_token_id = encoder.eos_id
    model.generation_config.pad_token_id = encoder.eos_id
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = 400
    model.config.use_cache = True  # off while training with gradient checkpointing; generation wants it
    compute_dtype = model.config.dtype if hasattr(model.config, "dtype") else None
    if cfg.save_dtype != "auto":
        model = model.to(dtypes[cfg.save_dtype])
    model.save_pretrained(out)
    if cfg.save_dtype == "float16" and compute_dtype is not None:  # stored small, computed in its own dtype
        config = json.loads((out / "config.json").read_text())
        config["dtype"] = str(compute_dtype).removeprefix("torch.")
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    _copy_tokenizer(cfg.tokenizer or cfg.base, out)


def train_synthesizer(cfg: TrainConfig) -> dict[str, Any]:
    """Tune, save, evaluate (and push) a synthesizer as `cfg` says; returns the training report."""
    from ipt_data.corpus.sources import as_dataset, load_source
    from ipt_data.train.loop import CHECKPOINTS, train_model

    out, repo = _local_output(cfg.output)
    if (out / REPORT).exists() and not (out / CHECKPOINTS).exists() and not cfg.overwrite:
        raise OutputExistsError(f"{out} holds a trained model already; pass --overwrite to replace it")
    ensure_model_available(cfg.base, "the base model", "--base")
    encoder = _encoder(cfg.tokenizer or cfg.base)
    rows = as_dataset(load_source(cfg.data, config=cfg.data_config, split=cfg.split))
    check_columns(next(iter(rows), None), cfg.columns)
    examples, rejects, n_rows = read_examples(iter(rows), cfg.columns)
    train, held = split_examples(examples, cfg.eval_fraction, cfg.seed)
    packed = pack(encoder, train, cfg.max_length, cfg.seed)
    rejects.update(packed.rejects)
    if not packed.sequences:
        raise InputError(f"{cfg.data}: no usable training example (rejected: {dict(rejects)})")
    log.info(
        "%d examples (%d held out), %d sequences, %d tokens (%d with a loss); rejected: %s",
        len(examples),
        len(held),
        len(packed.sequences),
        packed.tokens,
        packed.label_tokens,
        dict(rejects),
    )
    n_held, held = len(held), held[: cfg.eval_texts]
    history: list[dict] = []
    callbacks = [_EvalEveryNSteps(cfg, held, encoder, history)] if cfg.eval_steps and held else []
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, log_history, trained = train_model(cfg, packed.sequences, encoder.eos_id, out, callbacks)
    _save(model, cfg, encoder, out)
    del model
    evaluation = evaluate(str(out), held, cfg.eval_max_new_tokens)
    if not held:
        log.warning("no example was held out: the model is not evaluated (raise --eval-fraction)")
    elif not evaluation["zero_shot"]["texts_with_pairs"]:
        log.warning("the trained model wrote no well-formed pair for any held-out text: train longer or check the data")
    report = {
        "base": cfg.base,
        "data": cfg.data,
        "rows": n_rows,
        "examples": {"read": len(examples), "held_out": n_held, "evaluated": len(held), "packed": packed.examples},
        "rejects": dict(sorted(rejects.items())),
        "sequences": len(packed.sequences),
        "tokens": packed.tokens,
        "label_tokens": packed.label_tokens,
        "hyper_parameters": cfg.hyper_parameters() | trained,
        "train_seconds": round(time.perf_counter() - started, 1),
        # the mean loss of the last logging window (train_loss would average only what this process ran)
        "last_loss": next(({"step": h["step"], "loss": h["loss"]} for h in reversed(log_history) if "loss" in h), None),
        "evaluation": evaluation,
        "evaluation_history": history,
    }
    (out / REPORT).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    (out / "README.md").write_text(model_card(cfg, report))
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # a finished run needs no checkpoint
    if repo:
        _push(out, repo, cfg.private)
        report["output"] = f"hf://{repo}"
    else:
        report["output"] = str(out)
    return report


def _push(folder: Path, repo: str, private: bool) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Upload synthesizer trained by ipt_data")


class _EvalEveryNSteps(TrainerCallback):
    """Evaluates the model every `eval_steps` steps: a checkpoint is saved at those steps, then evaluated."""

    def __init__(self, cfg: TrainConfig, held: list[Example], encoder, history: list[dict]):
        self.cfg, self.held, self.encoder, self.history = cfg, held, encoder, history

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.cfg.eval_steps == 0 and state.global_step < state.max_steps:
            control.should_save = True  # the final model is evaluated anyway
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.global_step % self.cfg.eval_steps or state.global_step >= state.max_steps:
            return
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        _copy_tokenizer(self.cfg.tokenizer or self.cfg.base, checkpoint)
        result = evaluate(str(checkpoint), self.held, self.cfg.eval_max_new_tokens)
        self.history.append({"step": state.global_step, **result})
        log.info("step %d: %s", state.global_step, result)
