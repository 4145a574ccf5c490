"""Building the tiny fixture's inputs: an untrained tiny Mistral with the real tokenizer, and training data.

python -m ipt_data.testing.fixture_build base DIR          # the base model `make fixture` tunes
python -m ipt_data.testing.fixture_build data FILE [--n N]  # `synthetic_example`s as JSON Lines
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_example


def _tokenizer_source() -> Path:
    """The committed copy of Mistral-7B-v0.1's tokenizer files (tests/data in a checkout, else the fixture's)."""
    checkout = Path(__file__).resolve().parents[2] / "tests" / "data" / "mistral-7b-v0.1-tokenizer"
    return checkout if checkout.exists() else Path(TINY_SYNTHESIZER)


def write_tiny_base(out: str, seed: int = 0) -> None:
    """An untrained tiny Mistral with the real tokenizer: the base model the fixture is tuned from."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from ipt_data.method.tokenizer import PromptEncoder

    source = _tokenizer_source()
    encoder = PromptEncoder(str(source))
    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=encoder.tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=4096,
        sliding_window=None,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=encoder.bos_id,
        eos_token_id=encoder.eos_id,
        pad_token_id=encoder.eos_id,
    )
    folder = Path(out)
    MistralForCausalLM(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(source / name, folder / name)


def write_training_data(path: str, n: int, seed: int = 0) -> None:
    """`n` `synthetic_example`s as JSON Lines with `text`, `pairs` and `task` (the fixture's training data)."""
    rng = random.Random(seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            text, pairs = synthetic_example(rng)
            f.write(json.dumps({"text": text, "pairs": pairs, "task": "people"}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        prog="python -m ipt_data.testing.fixture_build", description="build the tiny fixture's inputs"
    )
    ap.add_argument("what", choices=("base", "data"))
    ap.add_argument("path")
    ap.add_argument("--n", type=int, default=20_000, help="examples of training data")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.what == "base":
        write_tiny_base(args.path, args.seed)
    else:
        write_training_data(args.path, args.n, args.seed)


if __name__ == "__main__":
    main()
