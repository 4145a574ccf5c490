"""ipt_data: turn a raw text corpus into an Instruction Pre-Training corpus.

Stages are plain `Dataset.map(batched=True)` functions: `chunk_batch`, `synthesize_batch`
(or a configured `Synthesizer`), `templify_batch`; then `mix` builds the corpus. The wire-format
helpers `build_prompt` / `parse_pairs` are the synthesizer's markup; `augment(AugmentConfig(...))` runs
the whole job and `publish` writes a corpus to a folder, an fsspec URL or the Hub.
"""

from ipt_data import fixtures
from ipt_data.budget import PromptEncoder, chunk_batch, prompt_budget
from ipt_data.config import AugmentConfig
from ipt_data.mix import mix, split_for_conversion
from ipt_data.pipeline import augment
from ipt_data.publish import publish
from ipt_data.synthesize import Synthesizer, synthesis_features, synthesize_batch
from ipt_data.templify import templify_batch
from ipt_data.wire import build_prompt, parse_pairs, render_pairs

__all__ = [
    "AugmentConfig",
    "PromptEncoder",
    "augment",
    "fixtures",
    "publish",
    "Synthesizer",
    "build_prompt",
    "chunk_batch",
    "mix",
    "parse_pairs",
    "prompt_budget",
    "render_pairs",
    "split_for_conversion",
    "synthesis_features",
    "synthesize_batch",
    "templify_batch",
]
__version__ = "0.1.0"
