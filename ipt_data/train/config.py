"""`TrainConfig`: every option of `ipt-data train-synthesizer`, each with its help, loadable from a YAML recipe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipt_data.errors import ConfigError
from ipt_data.options import RUN, Recipe, check_choices, option

COLUMN_KEYS = ("text", "pairs", "question", "answer", "task")


@dataclass
class TrainConfig(Recipe):
    recipe_paths = ("base", "data", "tokenizer")

    base: str | None = option(
        None, scope=RUN, help="the causal LM to tune: a Hub model id or a local folder (the paper: Mistral-7B-v0.1)"
    )
    data: str | None = option(
        None,
        scope=RUN,
        help="training data, any input ipt_data reads: `text` and `pairs` columns (pairs of instruction and "
        "response), or the columns named by --columns",
    )
    output: str = option("./synthesizer", scope=RUN, help="the model folder to write, or hf://<user>/<name> to push")
    data_config: str | None = option(None, scope=RUN, help="the training dataset's configuration (Hub datasets)")
    split: str = option("train", scope=RUN, help="the split to read")
    columns: dict[str, str] = option(
        scope=RUN,
        factory=dict,
        help='column mapping as JSON: {"text": ..., "pairs": ...} for our shape under other names, or '
        '{"text": "context", "question": "question", "answer": "answers"} for context-QA data (one '
        "question per row, SQuAD-style answers allowed; the questions of one context become one example); "
        '"task": a column whose same values are packed together',
    )
    tokenizer: str | None = option(None, scope=RUN, help="tokenizer folder (default: the base model's)")
    max_length: int = option(4096, scope=RUN, help="tokens per packed training sequence (examples are never cut)")
    eval_fraction: float = option(0.05, scope=RUN, help="share of examples held out for evaluation (seeded by text)")
    eval_texts: int = option(200, scope=RUN, help="held-out texts evaluated at most (generation costs time)")
    eval_steps: int = option(0, scope=RUN, help="also evaluate every N steps (0: only at the end)")
    eval_max_new_tokens: int = option(400, scope=RUN, help="tokens generated per held-out text")
    epochs: float = option(1.0, scope=RUN, help="passes over the training sequences")
    max_steps: int = option(-1, scope=RUN, help="stop after this many optimizer steps (-1: run the epochs)")
    learning_rate: float = option(1e-5, scope=RUN, help="peak learning rate")
    lr_scheduler: str = option(
        "cosine", scope=RUN, choices=("cosine", "linear", "constant_with_warmup"), help="learning-rate schedule"
    )
    warmup_ratio: float = option(0.03, scope=RUN, help="share of the steps spent warming up")
    weight_decay: float = option(0.0, scope=RUN, help="AdamW weight decay")
    batch_size: int = option(1, scope=RUN, help="sequences per device per step")
    gradient_accumulation: int = option(8, scope=RUN, help="steps whose gradients are summed before an update")
    gradient_checkpointing: bool = option(True, scope=RUN, help="recompute activations to save memory")
    precision: str = option(
        "auto", scope=RUN, choices=("auto", "bf16", "fp32"), help="auto: bf16 on a GPU that has it, else float32"
    )
    save_steps: int = option(200, scope=RUN, help="write a resumable checkpoint every N steps")
    save_dtype: str = option(
        "auto", scope=RUN, choices=("auto", "float16", "bfloat16", "float32"), help="dtype of the saved weights"
    )
    logging_steps: int = option(10, scope=RUN, help="log the loss every N steps")
    seed: int = option(0, scope=RUN, help="seed of the split, the packing order, initialisation and data order")
    lora: bool = option(False, scope=RUN, help="train LoRA adapters (needs the `train` extra: peft) and merge them")
    lora_r: int = option(16, scope=RUN, help="LoRA rank")
    lora_alpha: int = option(32, scope=RUN, help="LoRA alpha")
    sparse_vocab: bool = option(
        False,
        scope=RUN,
        help="for small models trained from scratch with tied embeddings: the softmax over the tokens the data "
        "uses plus one logit for the rest, whose embeddings are kept at zero (the exact loss, much faster)",
    )
    overwrite: bool = option(False, scope=RUN, help="replace a finished model already in the output folder")
    private: bool = option(False, scope=RUN, help="create a private Hub model repo")
    trust_remote_code: bool = option(False, scope=RUN, help="run the base model repo's own code")

    def __post_init__(self):
        if not self.base or not self.data:
            raise ConfigError("train-synthesizer needs --base (the model to tune) and --data (the training data)")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if min(self.max_length, self.batch_size, self.gradient_accumulation, self.save_steps) < 1:
            raise ConfigError("max_length, batch_size, gradient_accumulation and save_steps must be >= 1")
        if self.lora and self.sparse_vocab:
            raise ConfigError("sparse_vocab is for small models trained whole; it does not combine with lora")
        if not isinstance(self.columns, dict):
            raise ConfigError("columns must be a JSON object")
        unknown = sorted(set(self.columns) - set(COLUMN_KEYS))
        if unknown:
            raise ConfigError(f"columns: unknown keys {unknown}; the keys are {list(COLUMN_KEYS)}")
        check_choices(self)

    def hyper_parameters(self) -> dict[str, Any]:
        """What the model card shows."""
        keys = (
            "max_length",
            "epochs",
            "max_steps",
            "learning_rate",
            "lr_scheduler",
            "warmup_ratio",
            "weight_decay",
            "batch_size",
            "gradient_accumulation",
            "precision",
            "gradient_checkpointing",
            "sparse_vocab",
            "lora",
            "seed",
        )
        return {k: getattr(self, k) for k in keys}
