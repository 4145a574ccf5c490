"""The `hf` engine: transformers `generate`, batched and left-padded, on one GPU or the CPU.

Prompts are sorted by length and cut into micro-batches of `batch_size` so that prompts of like
length share a batch (little padding); `generate` stops as soon as every sequence of the batch
has produced EOS. Greedy by default; bf16 on GPU, float32 on CPU (both overridable). A batch
that fails (out of memory, say) is split in halves and retried, down to single prompts; a prompt
that still fails, or that leaves no room to generate, gets an error completion.

Benchmark options (the vLLM engine has the same two): `load_format="dummy"` makes random weights from the
model's config.json on the device (nothing but the config and tokenizer is read), and `ignore_eos=True`
generates exactly `max_new_tokens` for every prompt.

On CUDA the `hf` engine is `HFStreamingEngine` (`engines/hf_stream.py`, continuous batching), a subclass
of this one; this static path is the CPU default and the fallback (`continuous` in `engine_options`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ipt_data.engines.base import Completion, generate_isolated, unservable
from ipt_data.method.tokenizer import get_encoder


class HFEngine:
    name = "hf"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        dtype: str | None = None,
        batch_size: int = 32,
        max_model_len: int = 4096,
        trust_remote_code: bool = False,
        load_format: str = "auto",
        ignore_eos: bool = False,
    ):
        self.device = torch.device(device)
        if dtype is None:
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.model = _load(model, self.device, getattr(torch, dtype), load_format, trust_remote_code)
        self.model.eval()
        self.ignore_eos = ignore_eos
        self._generating = 0  # prompts in the batch generating now
        self.encoder = get_encoder(model, trust_remote_code)  # decodes with the model's own tokenizer.json
        self.eos_id = self.encoder.eos_id
        pad = self.model.generation_config.pad_token_id
        self.pad_id = pad if isinstance(pad, int) else self.eos_id
        self.batch_size = max(1, batch_size)
        limit = getattr(self.model.config, "max_position_embeddings", None) or max_model_len
        self.max_model_len = min(max_model_len, limit)

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Completion]:
        results: list[Completion | None] = [unservable(p, self.max_model_len) for p in prompts]
        runnable = [i for i, r in enumerate(results) if r is None]
        runnable.sort(key=lambda i: len(prompts[i]))
        for start in range(0, len(runnable), self.batch_size):
            chunk = runnable[start : start + self.batch_size]
            for i, completion in zip(
                chunk, self._run([prompts[i] for i in chunk], max_new_tokens, temperature, seed), strict=True
            ):
                results[i] = completion
        return results  # type: ignore[return-value]

    @property
    def capacity(self) -> int:
        """The most prompts one batch holds."""
        return self.batch_size

    @property
    def in_flight(self) -> int:
        """Prompts generating now (benchmarks sample it for the engine's occupancy)."""
        return self._generating

    def _run(self, prompts: list[Sequence[int]], max_new_tokens: int, temperature: float, seed: int):
        def attempt(batch: list[Sequence[int]]) -> list[Completion]:
            self._generating = len(batch)
            try:
                return self._generate(batch, max_new_tokens, temperature, seed)
            except Exception:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                raise
            finally:
                self._generating = 0

        return generate_isolated(attempt, prompts)

    @torch.inference_mode()
    def _generate(self, prompts: list[Sequence[int]], max_new_tokens: int, temperature: float, seed: int):
        width = max(len(p) for p in prompts)
        new_tokens = min(max_new_tokens, self.max_model_len - width)
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + list(p) for p in prompts], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        sampling = {"do_sample": False} if temperature <= 0 else {"do_sample": True, "temperature": temperature}
        if self.ignore_eos:
            sampling["min_new_tokens"] = new_tokens
        if temperature > 0:
            torch.manual_seed(seed)
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            top_k=None,
            top_p=None,
            **sampling,
        )
        rows, reasons = zip(*(self.until_eos(row) for row in out[:, width:].tolist()), strict=True)
        texts = self.encoder.decode_batch(list(rows))
        return [Completion(t, r, len(p), len(row)) for t, r, p, row in zip(texts, reasons, prompts, rows, strict=True)]

    def until_eos(self, tokens: list[int]) -> tuple[list[int], str]:
        """A completion's tokens up to its first EOS (kept), and its finish reason: "stop" there, else "length"
        (always with `ignore_eos`)."""
        if self.ignore_eos or self.eos_id not in tokens:
            return tokens, "length"
        return tokens[: tokens.index(self.eos_id) + 1], "stop"


def _load(model: str, device: torch.device, dtype: torch.dtype, load_format: str, trust_remote_code: bool):
    """The model's weights from `model`, or with `load_format="dummy"` random ones made on `device` from its
    config.json (the real shape of a model without downloading it: benchmarks)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if load_format == "dummy":
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
        with torch.device(device):
            return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    if load_format != "auto":
        raise ValueError(f"load_format must be 'auto' or 'dummy', got {load_format!r}")
    return AutoModelForCausalLM.from_pretrained(model, dtype=dtype, trust_remote_code=trust_remote_code).to(device)
