"""ipt_data: turn a raw text corpus into an Instruction Pre-Training corpus.

Stages are plain `Dataset.map(batched=True)` functions: `chunk_batch`, `synthesize_batch`
(or a configured `Synthesizer`), `templify_batch` (drop synthesized rows before it with
`filter_synthesized`, or `relink` after your own filter); then `mix` builds the corpus. A run's shards go
through the stages `ipt_data.stages.PIPELINE` declares (with pair filters and decontamination when asked).
The wire-format helpers `build_prompt` / `parse_pairs` are the synthesizer's markup; `augment(AugmentConfig(...))` runs
the whole job and `publish` writes a corpus to a folder, an fsspec URL or the Hub; `stats` describes a published corpus.
"""

import logging

__version__ = "0.3.0"

from ipt_data.config import AugmentConfig  # noqa: E402
from ipt_data.corpus.mixing import mix, split_for_conversion  # noqa: E402
from ipt_data.corpus.stats import stats  # noqa: E402
from ipt_data.errors import IptDataError  # noqa: E402
from ipt_data.method.chains import filter_synthesized, relink  # noqa: E402
from ipt_data.method.tokenizer import PromptEncoder, prompt_budget  # noqa: E402
from ipt_data.method.wire import build_prompt, parse_pairs, render_pairs  # noqa: E402
from ipt_data.options import SynthesisOptions  # noqa: E402
from ipt_data.run import augment  # noqa: E402
from ipt_data.schema import synthesis_features, templify_features  # noqa: E402
from ipt_data.sinks import publish  # noqa: E402
from ipt_data.stages.chunk import chunk_batch  # noqa: E402
from ipt_data.stages.synthesize import Synthesizer, synthesize_batch  # noqa: E402
from ipt_data.stages.templify import templify_batch  # noqa: E402
from ipt_data.testing import fixtures  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AugmentConfig",
    "IptDataError",
    "PromptEncoder",
    "SynthesisOptions",
    "Synthesizer",
    "augment",
    "build_prompt",
    "chunk_batch",
    "filter_synthesized",
    "fixtures",
    "mix",
    "parse_pairs",
    "prompt_budget",
    "relink",
    "publish",
    "render_pairs",
    "split_for_conversion",
    "stats",
    "synthesis_features",
    "synthesize_batch",
    "templify_batch",
    "templify_features",
]
