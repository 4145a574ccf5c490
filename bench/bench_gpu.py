"""GPU throughput at the synthesizer's real shape, without downloading it (issue 17).

    python bench/bench_gpu.py [--docs 4000] [--repeats 2] [--max-num-seqs N] [--smoke]

The model is Mistral-7B-v0.1's architecture (its config.json is written here, with the real tokenizer that
tests/data holds) loaded by vLLM with `load_format="dummy"`: random weights of the real size, nothing to
download. Random weights never stop on their own, so every completion is exactly `max_new_tokens` (400)
tokens (`ignore_eos`), and the completion is read as one fixed, well-formed completion of three pairs, so
that chains carry 0-2 demos as with the real synthesizer (M = 3). The documents are the bundled corpus's
English, cut to token lengths drawn from a log-normal distribution (median 600 tokens, sigma 1.0, at most
20,000), chunked by our chunker to the real budget (4,096 - 400). Greedy.

Side by side in one run, the engine started once (its start-up printed apart):
- bare: `LLM.generate` on every prompt `augment` sends (recorded in a warm-up run), in one call: the ceiling;
- synthesize (stream): `Synthesizer.stream` over the chunks in batches of `--batch-size`;
- augment (stream): `augment` end to end (chunk, synthesize, templify, write, mix, statistics, card);
- augment (rounds): the same with the previous design (one engine call per round of each batch).
For each: generated tokens/s, prompts/s, engine occupancy (mean running sequences / max_num_seqs, sampled
from vLLM's own gauge every 20 ms) and GPU-hours per 1B raw tokens (tokens of the input documents); and the
arithmetic compute bound for the GPU found (2 x parameters FLOPs per prompt or generated token, at its dense
bf16 peak). One JSON per run in bench/results/.

Without a GPU (or with --smoke) the same code runs a small shape (2 layers, hidden 256; 64 documents; 32 new
tokens) on vLLM's CPU build: a smoke test of the benchmark, inside `make bench`; its numbers say nothing
about a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from side_by_side import augment_runner, interleaved, recorded_prompts

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path("build") / "vllm-cache"))

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "data" / "mistral-7b-v0.1-tokenizer"
MISTRAL_7B = {  # Mistral-7B-v0.1's config.json (architecture only)
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-05,
    "sliding_window": 4096,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "bfloat16",
}
SMOKE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4}
SMOKE |= {"num_key_value_heads": 2}
PEAK_BF16_TFLOPS = {  # dense bf16 peaks from the vendors' data sheets, by a word of the device name
    "H200": 989.4,
    "H100 SXM": 989.4,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "GH200": 989.4,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.1,
    "L40": 181.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L4": 121.0,
}
# one well-formed completion of three pairs (our own words), read in place of the random weights' noise
CANNED = (
    "<QUE> What does the passage say the committee decided about the new schedule? <ANS> It decided to "
    "move the weekly meeting to Thursday mornings and to publish the minutes within two days. </END>"
    "<QUE> Why was the change needed, according to the text? <ANS> Members in other time zones could not "
    "attend the old evening slot, and the minutes had often been late. </END>"
    "<QUE> Which of these is stated in the passage? Options: - The meeting moves to Thursday. - The meeting "
    "is cancelled. <ANS> The meeting moves to Thursday. </END>"
)


def params_of(config: dict) -> int:
    d, ff, layers, vocab = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"], 32000
    kv = d // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = d * (d + 2 * kv) + d * d + 3 * d * ff + 2 * d
    return 2 * vocab * d + layers * per_layer + d


def write_model(folder: Path, smoke: bool) -> dict:
    config = {**MISTRAL_7B, **(SMOKE if smoke else {})}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    for f in TOKENIZER.iterdir():
        shutil.copy(f, folder / f.name)
    return config


def documents(n: int, seed: int = 0) -> list[str]:
    """`n` English documents cut from the bundled corpus to log-normal token lengths (median 600, sigma 1)."""
    from ipt_data.config import SAMPLE_CORPUS

    words = " ".join(json.loads(line)["text"] for line in open(SAMPLE_CORPUS, encoding="utf-8")).split()
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        tokens = min(20_000, max(20, int(rng.lognormvariate(math.log(600), 1.0))))
        n_words, start = int(tokens * 0.75), rng.randrange(len(words))
        docs.append(" ".join(words[(start + k) % len(words)] for k in range(n_words)))
    return docs


class Canned:
    """The engine's decoder, reading every completion as `CANNED` (random weights write noise)."""

    def __init__(self, encoder):
        self.encoder = encoder

    def decode_batch(self, batch):
        return [CANNED for _ in batch]

    def __getattr__(self, name):
        return getattr(self.encoder, name)


class Occupancy:
    """Mean of vLLM's `vllm:num_requests_running` gauge, sampled every 20 ms while the block runs."""

    def __init__(self, llm):
        self.llm, self.samples, self.stop = llm, [], threading.Event()

    def _running(self) -> float | None:
        for metric in self.llm.get_metrics():
            if metric.name == "vllm:num_requests_running":
                return float(getattr(metric, "value", 0.0))
        return None

    def __enter__(self):
        def sample():
            while not self.stop.wait(0.02):
                value = self._running()
                if value is not None:
                    self.samples.append(value)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


def gpu() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores)", None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return name, peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3, help="M; 3 gives prompts with 0-2 demos")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--max-num-seqs", type=int, default=None, help="vLLM's (default: its own)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="the small CPU shape (automatic without a GPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    try:
        import vllm
    except ImportError:
        print("bench_gpu: vLLM is not installed (make install-vllm, or pip install 'ipt-data[vllm]'); skipped")
        return
    device, peak = gpu()
    smoke = args.smoke or peak is None and "CPU" in device
    if smoke:
        args.docs, args.max_new_tokens, args.repeats = min(args.docs, 64), 32, 1
        args.batch_size, args.shard_size = 32, 64
    out_path = Path(args.out or f"bench/results/gpu-{'smoke' if smoke else device.replace(' ', '_')}.json")

    from ipt_data.engines import clear_cache, load_engine
    from ipt_data.method.tokenizer import get_encoder
    from ipt_data.stages.chunk import chunk_batch
    from ipt_data.stages.synthesize import Synthesizer

    tmp = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    model = tmp / "mistral-7b-shape"
    config = write_model(model, smoke)
    n_params = params_of(config)
    docs = documents(args.docs)
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    encoder = get_encoder(str(model))
    raw_tokens = sum(len(ids) for ids in encoder.encode_texts(docs))
    llm_kwargs = {"load_format": "dummy", "disable_log_stats": False}
    if smoke:
        llm_kwargs["enforce_eager"] = True
    options = {"dtype": "bfloat16", "llm_kwargs": llm_kwargs, "sampling_kwargs": {"ignore_eos": True}}
    if args.max_num_seqs:
        options["max_num_seqs"] = args.max_num_seqs
    start = time.perf_counter()
    engine = load_engine(str(model), "vllm", max_model_len=4096, **options)  # cached: augment uses this one
    startup = time.perf_counter() - start
    engine.encoder = Canned(engine.encoder)
    synth_options = dict(model=str(model), engine="vllm", engine_options=options, rounds=args.rounds)
    synth_options |= dict(max_new_tokens=args.max_new_tokens)
    chunks = chunk_batch({"text": docs}, tokenizer=encoder, max_new_tokens=args.max_new_tokens)
    batches = [
        {k: v[b : b + args.batch_size] for k, v in chunks.items()}
        for b in range(0, len(chunks["text"]), args.batch_size)
    ]

    run = augment_runner(
        tmp, "gpu", dataset=str(corpus), batch_size=args.batch_size, shard_size=args.shard_size, **synth_options
    )

    def synthesize() -> tuple[float, int, int]:
        start = time.perf_counter()
        outs = list(Synthesizer(**synth_options).stream(batches))
        tokens = sum(t for out in outs for t in out["completion_tokens"])
        return time.perf_counter() - start, tokens, len(chunks["text"])

    prompts = recorded_prompts(engine, run, probe=encoder.context_ids(["Ping."])[0])
    shots = [sum(tok == encoder.bos_id for tok in p) - 1 for p in prompts]  # demos in each prompt
    sampling = vllm.SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, ignore_eos=True, detokenize=False)

    def bare() -> tuple[float, int, int]:
        start = time.perf_counter()
        outs = engine.llm.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompts], sampling, use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs), len(prompts)

    sides = {
        "bare LLM.generate": bare,
        "synthesize (stream)": synthesize,
        "augment (stream)": lambda: run("stream"),
        "augment (rounds)": lambda: run("rounds"),
    }
    runs = interleaved(sides, args.repeats, around=lambda: Occupancy(engine.llm))
    clear_cache()
    shutil.rmtree(tmp, ignore_errors=True)

    max_num_seqs = engine.max_num_seqs
    prompt_tokens = sum(len(p) for p in prompts)
    rows = {
        name: {
            "seconds": r["seconds"],
            "gen_tokens_per_s": r["tokens_per_s"],
            "prompts_per_s": r["prompts_per_s"],
            "occupancy": statistics.fmean(o.mean for o in r["around"]) / max_num_seqs,
            "gpu_hours_per_1b_raw_tokens": r["seconds"] * 1e9 / raw_tokens / 3600,
        }
        for name, r in runs.items()
    }
    flops = 2 * n_params * (prompt_tokens + len(prompts) * args.max_new_tokens)
    bound = flops / (peak * 1e12) if peak else None
    print(
        f"\n{device}; vLLM {vllm.__version__}; Mistral-7B-v0.1 shape{' (SMOKE: 2 layers, hidden 256)' if smoke else ''}"
        f", {n_params / 1e9:.2f}B parameters, dummy weights, bf16; max_num_seqs {max_num_seqs}"
    )
    print(
        f"{len(docs)} documents, {raw_tokens:,} raw tokens, {len(prompts)} prompts ({prompt_tokens:,} tokens; "
        f"demos per prompt 0/1/2: {shots.count(0)}/{shots.count(1)}/{shots.count(2)}), {args.max_new_tokens} new "
        f"tokens each; M={args.rounds}, batch {args.batch_size}, shard {args.shard_size}; median of {args.repeats}; "
        f"engine start-up {startup:.0f} s (apart)"
    )
    print(f"{'':22} {'seconds':>8} {'gen tok/s':>10} {'prompts/s':>10} {'occupancy':>10} {'GPU-h/1B raw':>13}")
    for name, r in rows.items():
        print(
            f"{name:22} {r['seconds']:>8.2f} {r['gen_tokens_per_s']:>10,.0f} {r['prompts_per_s']:>10.1f} "
            f"{r['occupancy']:>10.2f} {r['gpu_hours_per_1b_raw_tokens']:>13,.1f}"
        )
    if bound:
        print(
            f"compute bound at {peak:.0f} dense bf16 TFLOP/s: {bound:.2f} s for this work "
            f"({bound * 1e9 / raw_tokens / 3600:,.1f} GPU-h per 1B raw tokens); bare reaches "
            f"{bound / rows['bare LLM.generate']['seconds']:.0%} of it"
        )
    else:
        print("compute bound: n/a (no GPU with a known peak found)")
    result = {
        "device": device,
        "smoke": smoke,
        "vllm": vllm.__version__,
        "parameters": n_params,
        "max_num_seqs": max_num_seqs,
        "documents": len(docs),
        "raw_tokens": raw_tokens,
        "prompts": len(prompts),
        "prompt_tokens": prompt_tokens,
        "demos_per_prompt": {str(k): shots.count(k) for k in sorted(set(shots))},
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "engine_startup_s": startup,
        "rows": rows,
        "compute_bound_s": bound,
        "peak_bf16_tflops": peak,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
