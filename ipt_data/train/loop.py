"""The training itself: transformers' `Trainer` over packed sequences, resumable from its last checkpoint.

bf16 on a GPU that supports it, float32 on a CPU; gradient checkpointing; LoRA through `peft` (merged into
the saved weights); several GPUs through `accelerate launch` / `torchrun` with no change. With
`sparse_vocab` (small models trained from scratch, tied embeddings), the loss is the softmax over the tokens
the data uses plus one logit standing for every other token, whose embeddings are zeroed and get no
gradient: their logits are all 0, so together they add log(n_unused) to the log-sum-exp, and the loss is the
exact full-vocabulary cross-entropy at a fraction of the cost.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from ipt_data.errors import ConfigError, MissingExtraError
from ipt_data.train.packing import IGNORE

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


class Collator:
    """Pads a batch of packed sequences (labels with -100, attention mask 0 on padding)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        pad = lambda xs, v: xs + [v] * (width - len(xs))  # noqa: E731
        return {
            "input_ids": torch.tensor([pad(f["input_ids"], self.pad_id) for f in features]),
            "labels": torch.tensor([pad(f["labels"], IGNORE) for f in features]),
            "attention_mask": torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features]),
        }


def _sparse_loss_trainer(base, used: list[int]):
    """A `Trainer` class whose loss is the exact cross-entropy computed over `used` tokens (see module doc)."""

    class SparseVocabTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            emb = model.get_input_embeddings().weight
            used_t = torch.tensor(used, device=emb.device)
            remap = torch.full((emb.shape[0],), IGNORE, dtype=torch.long, device=emb.device)
            remap[used_t] = torch.arange(len(used), device=emb.device)
            hidden = model.model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).last_hidden_state
            logits = hidden[:, :-1] @ emb[used_t].T
            rest = math.log(emb.shape[0] - len(used))
            logits = torch.cat([logits, torch.full_like(logits[..., :1], rest)], dim=-1)
            targets = inputs["labels"][:, 1:]
            targets = torch.where(targets == IGNORE, targets, remap[targets.clamp(min=0)])
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE
            )
            return (loss, None) if return_outputs else loss

    return SparseVocabTrainer


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest `checkpoint-N` under `folder` that was written whole: the Trainer writes `trainer_state.json`
    last and not atomically, so a run killed while saving leaves a newest checkpoint without it, or with the
    file cut short."""
    done = [p for p in folder.glob("checkpoint-*") if _whole_json(p / "trainer_state.json")] if folder.exists() else []
    return str(max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]))) if done else None


def _whole_json(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def _unused(vocab: int, used: list[int]) -> torch.Tensor:
    """A mask of the tokens not in `used`."""
    unused = torch.ones(vocab, dtype=torch.bool)
    unused[used] = False
    return unused


def _zero_unused(model, used: list[int]) -> None:
    emb = model.get_input_embeddings().weight
    if model.get_output_embeddings() is None or model.get_output_embeddings().weight is not emb:
        raise ConfigError("sparse_vocab needs a model whose output layer is tied to its embeddings")
    with torch.no_grad():
        emb[_unused(emb.shape[0], used)] = 0.0


def train_model(cfg, train_sequences: list[dict], pad_id: int, work: Path, callbacks: list | None = None) -> Any:
    """Train on `train_sequences`, checkpointing under `work/checkpoints` (resumed from the last one there);
    returns the trained model (LoRA merged), the Trainer's log history and what was run (epochs, steps,
    precision)."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    gpu = torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and gpu and torch.cuda.is_bf16_supported())
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(
        cfg.base, dtype=torch.bfloat16 if bf16 else torch.float32, trust_remote_code=cfg.trust_remote_code
    )
    used = sorted({t for s in train_sequences for t in s["input_ids"]})
    if cfg.sparse_vocab:
        _zero_unused(model, used)
    if cfg.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise MissingExtraError("--lora needs peft: pip install 'ipt-data[train]'") from exc
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, task_type="CAUSAL_LM"))
    checkpoints = work / CHECKPOINTS
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=float(cfg.warmup_ratio),  # a float in [0, 1) is a share of the steps
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        gradient_checkpointing=cfg.gradient_checkpointing and not cfg.sparse_vocab,
        bf16=bf16,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        logging_steps=cfg.logging_steps,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        remove_unused_columns=False,
        disable_tqdm=not log.isEnabledFor(logging.INFO),
        dataloader_num_workers=0,
        use_cpu=not gpu,
    )
    trainer_cls = _sparse_loss_trainer(Trainer, used) if cfg.sparse_vocab else Trainer
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_sequences,
        data_collator=Collator(pad_id),
        callbacks=callbacks or [],
    )
    last = last_complete_checkpoint(checkpoints)
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    trained = {"epochs_run": round(trainer.state.epoch or 0.0, 3), "steps_run": trainer.state.global_step}
    trained["precision"] = "bf16" if bf16 else "fp32"
    model = trainer.model
    if cfg.lora:
        model = model.merge_and_unload()
    if cfg.sparse_vocab:
        emb = model.get_input_embeddings().weight
        assert not emb[_unused(emb.shape[0], used)].any(), "unused embeddings must stay zero"
    return model, trainer.state.log_history, trained
