"""GPU throughput at the synthesizer's real shape, without downloading it (issues 17 and 26).

    python bench/bench_gpu.py [--engine vllm|hf] [--docs 4000] [--repeats 2] [--max-num-seqs N] [--smoke]

The model is Mistral-7B-v0.1's architecture (its config.json is written here, with the real tokenizer that
tests/data holds) loaded with `load_format="dummy"` (by vLLM, or by transformers for `--engine hf`): random
bf16 weights of the real size made on the GPU, nothing to download. Random weights do not stop when a real
model would, so every completion is made exactly `max_new_tokens` (400) tokens (`ignore_eos`), and the
completion is read as one fixed, well-formed completion of three pairs, so that chains carry 0-2 demos as
with the real synthesizer (M = 3). The documents are the bundled corpus's English, cut to token lengths drawn
from a log-normal distribution (median 600 tokens, sigma 1.0, at most 20,000), chunked by our chunker to the
real budget (4,096 - 400). Greedy.

Side by side in one run, the engines started once (their start-up printed apart):
- bare: every prompt `augment` sends (recorded in a warm-up run), in one call of the engine library's own
  batch entry point: vLLM's `LLM.generate`, or transformers' `generate_batch` (continuous batching) with the
  same cache settings as the engine: the ceiling;
- synthesize (stream): `Synthesizer.stream` over the chunks in batches of `--batch-size`;
- augment (stream): `augment` end to end (chunk, synthesize, templify, write, mix, statistics, card);
- vllm: augment (rounds): the same with the previous design (one engine call per round of each batch);
  hf: augment (static): the same on the static `hf` engine (left-padded batches of `--hf-batch-size`,
  `continuous=False`), which is what the `hf` engine was before continuous batching.
For each: generated tokens/s, prompts/s, engine occupancy and GPU-hours per 1B raw tokens (tokens of the
input documents); and the arithmetic compute bound for the GPU found (2 x parameters FLOPs per prompt or
generated token, at its dense bf16 peak). Occupancy, sampled every 20 ms: vLLM's gauge of running sequences
/ max_num_seqs; for hf, the prompts the engine holds (capped at what one step takes) / that capacity (n/a
for bare `generate_batch`, whose manager is transformers' own). One JSON per run in bench/results/.

Without a GPU (or with --smoke) the same code runs a small shape (2 layers, hidden 256; 64 documents; 32 new
tokens) on the CPU (vLLM's CPU build; for hf, a small KV cache): a smoke test of the benchmark (`make bench`
runs the vLLM one, `bench/gpu_check.sh --smoke` the hf one); its numbers say nothing about a GPU.
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
    """Mean of `running()` (sequences the engine runs, or None when unknown), sampled every 20 ms while the
    block runs."""

    def __init__(self, running):
        self._running, self.samples, self.stop = running, [], threading.Event()

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


def vllm_running(llm):
    """vLLM's `vllm:num_requests_running` gauge."""

    def running() -> float | None:
        for metric in llm.get_metrics():
            if metric.name == "vllm:num_requests_running":
                return float(getattr(metric, "value", 0.0))
        return None

    return running


def vllm_engine(model: Path, args, smoke: bool) -> dict:
    """The vLLM engine (cached: `augment` uses this one), its bare side and how to read its occupancy."""
    import vllm

    from ipt_data.engines import load_engine

    llm_kwargs = {"load_format": "dummy", "disable_log_stats": False}
    if smoke:
        llm_kwargs["enforce_eager"] = True
    options = {"dtype": "bfloat16", "llm_kwargs": llm_kwargs, "sampling_kwargs": {"ignore_eos": True}}
    if args.max_num_seqs:
        options["max_num_seqs"] = args.max_num_seqs
    start = time.perf_counter()
    engine = load_engine(str(model), "vllm", max_model_len=4096, **options)
    startup = time.perf_counter() - start
    engine.encoder = Canned(engine.encoder)
    sampling = vllm.SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, ignore_eos=True, detokenize=False)

    def bare(prompts):
        start = time.perf_counter()
        outs = engine.llm.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompts], sampling, use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs), len(prompts)

    occupancy = vllm_running(engine.llm)
    return {
        "label": f"vLLM {vllm.__version__}",
        "versions": {"vllm": vllm.__version__},
        "engine": engine,
        "options": options,
        "startup": startup,
        "bare": ("bare LLM.generate", bare),
        "occupancy": {"stream": lambda: Occupancy(occupancy), "bare": lambda: Occupancy(occupancy)},
        "capacity": {"stream": engine.max_num_seqs, "bare": engine.max_num_seqs},
        "last": ("augment (rounds)", {"pipeline": "rounds"}),
    }


def hf_engine(model: Path, args, smoke: bool) -> dict:
    """The `hf` engines, continuous and static (cached: `augment` uses these), the bare `generate_batch` side
    and how to read their occupancy."""
    import torch
    import transformers

    from ipt_data.engines import load_engine

    options = {"dtype": "float32" if smoke else "bfloat16", "load_format": "dummy", "ignore_eos": True}
    options["continuous"] = True
    if smoke:  # a small cache: with its defaults, continuous batching on a CPU crawls
        options |= dict(cache_blocks=256, page_size=32, max_batch_tokens=1024, max_requests_per_batch=16)
        options["cuda_graphs"] = False
    if args.max_num_seqs:
        options["max_requests_per_batch"] = args.max_num_seqs
    if not smoke:  # half the free memory for the KV cache: the static engine beside it needs room to generate
        options["memory_fraction"] = args.memory_fraction or 0.5
    static_options = {k: v for k, v in options.items() if k in ("dtype", "load_format", "ignore_eos")}
    static_options |= {"continuous": False, "batch_size": args.hf_batch_size}
    start = time.perf_counter()
    static = load_engine(str(model), "hf", max_model_len=4096, **static_options)
    engine = load_engine(str(model), "hf", max_model_len=4096, **options)
    startup = time.perf_counter() - start
    static.encoder = Canned(static.encoder)
    engine.encoder = Canned(engine.encoder)

    def bare(prompts):
        engine.release()  # its KV cache: generate_batch makes its own, with the same settings
        start = time.perf_counter()
        outs = engine.model.generate_batch(  # no inference_mode here: its tensors are used by the manager's thread
            prompts,
            generation_config=engine.generation_config(),
            continuous_batching_config=engine.batching_config(),
            max_new_tokens=args.max_new_tokens,
        )
        seconds = time.perf_counter() - start
        failed = [o.error for o in outs.values() if o.error]
        assert not failed and len(outs) == len(prompts), f"generate_batch failed: {failed[:3]}"
        return seconds, sum(len(o.generated_tokens) for o in outs.values()), len(prompts)

    def held(e):
        return lambda: min(e.in_flight, e.capacity)

    return {
        "label": f"transformers {transformers.__version__} (torch {torch.__version__})",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "engine": engine,
        "options": options,
        "startup": startup,
        "bare": ("bare generate_batch", bare),
        "occupancy": {
            "stream": lambda: Occupancy(held(engine)),
            "static": lambda: Occupancy(held(static)),
            "bare": lambda: Occupancy(lambda: None),
        },
        "capacity": {"stream": engine.capacity, "static": static.capacity, "bare": engine.capacity},
        "last": ("augment (static)", {"engine_options": static_options, "pipeline": "rounds"}),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3, help="M; 3 gives prompts with 0-2 demos")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--max-num-seqs", type=int, default=None, help="vLLM's (hf: max_requests_per_batch)")
    ap.add_argument("--hf-batch-size", type=int, default=64, help="the static hf engine's batch")
    ap.add_argument("--memory-fraction", type=float, default=None, help="hf: of free GPU memory for the KV cache")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="the small CPU shape (automatic without a GPU)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.engine == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("bench_gpu: vLLM is not installed (make install-vllm, or pip install 'ipt-data[vllm]'); skipped")
            return
    device, peak = gpu()
    smoke = args.smoke or peak is None and "CPU" in device
    if smoke:
        args.docs, args.max_new_tokens, args.repeats = min(args.docs, 64), 32, 1
        args.batch_size, args.shard_size, args.hf_batch_size = 32, 64, 16
    tag = "smoke" if smoke else device.replace(" ", "_")
    out_path = Path(args.out or f"bench/results/gpu-{args.engine}-{tag}.json")

    from ipt_data.engines import clear_cache
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
    side = (vllm_engine if args.engine == "vllm" else hf_engine)(model, args, smoke)
    engine, options = side["engine"], side["options"]
    synth_options = dict(model=str(model), engine=args.engine, engine_options=options, rounds=args.rounds)
    synth_options |= dict(max_new_tokens=args.max_new_tokens)
    chunks = chunk_batch({"text": docs}, tokenizer=encoder, max_new_tokens=args.max_new_tokens)
    batches = [
        {k: v[b : b + args.batch_size] for k, v in chunks.items()}
        for b in range(0, len(chunks["text"]), args.batch_size)
    ]
    run_config = dict(dataset=str(corpus), batch_size=args.batch_size, shard_size=args.shard_size, **synth_options)
    run = augment_runner(tmp, "gpu", **run_config)
    last_name, last_config = side["last"]
    last_pipeline = last_config.pop("pipeline")
    last = augment_runner(tmp, "last", **(run_config | last_config))

    def synthesize() -> tuple[float, int, int]:
        start = time.perf_counter()
        outs = list(Synthesizer(**synth_options).stream(batches))
        tokens = sum(t for out in outs for t in out["completion_tokens"])
        return time.perf_counter() - start, tokens, len(chunks["text"])

    prompts = recorded_prompts(engine, run, probe=encoder.context_ids(["Ping."])[0])
    shots = [sum(tok == encoder.bos_id for tok in p) - 1 for p in prompts]  # demos in each prompt
    bare_name, bare = side["bare"]
    sides = {
        bare_name: lambda: bare(prompts),
        "synthesize (stream)": synthesize,
        "augment (stream)": lambda: run("stream"),
        last_name: lambda: last(last_pipeline),
    }
    kinds = {bare_name: "bare", last_name: "static" if args.engine == "hf" else "stream"}
    arounds = {name: side["occupancy"][kinds.get(name, "stream")] for name in sides}
    runs = interleaved(sides, args.repeats, around=arounds)
    clear_cache()
    shutil.rmtree(tmp, ignore_errors=True)

    prompt_tokens = sum(len(p) for p in prompts)
    rows = {}
    for name, r in runs.items():
        capacity = side["capacity"][kinds.get(name, "stream")]
        rows[name] = {
            "seconds": r["seconds"],
            "gen_tokens_per_s": r["tokens_per_s"],
            "prompts_per_s": r["prompts_per_s"],
            "occupancy": statistics.fmean(o.mean for o in r["around"]) / capacity,
            "gpu_hours_per_1b_raw_tokens": r["seconds"] * 1e9 / raw_tokens / 3600,
        }
    flops = 2 * n_params * (prompt_tokens + len(prompts) * args.max_new_tokens)
    bound = flops / (peak * 1e12) if peak else None
    capacity = side["capacity"]["stream"]
    print(
        f"\n{device}; {side['label']}; Mistral-7B-v0.1 shape{' (SMOKE: 2 layers, hidden 256)' if smoke else ''}"
        f", {n_params / 1e9:.2f}B parameters, dummy weights, {options['dtype']}; {args.engine} capacity {capacity}"
    )
    print(
        f"{len(docs)} documents, {raw_tokens:,} raw tokens, {len(prompts)} prompts ({prompt_tokens:,} tokens; "
        f"demos per prompt 0/1/2: {shots.count(0)}/{shots.count(1)}/{shots.count(2)}), {args.max_new_tokens} new "
        f"tokens each; M={args.rounds}, batch {args.batch_size}, shard {args.shard_size}; median of {args.repeats}; "
        f"engine start-up {side['startup']:.0f} s (apart)"
    )
    print(f"{'':22} {'seconds':>8} {'gen tok/s':>10} {'prompts/s':>10} {'occupancy':>10} {'GPU-h/1B raw':>13}")
    for name, r in rows.items():
        print(
            f"{name:22} {r['seconds']:>8.2f} {r['gen_tokens_per_s']:>10,.0f} {r['prompts_per_s']:>10.1f} "
            f"{r['occupancy']:>10.2f} {r['gpu_hours_per_1b_raw_tokens']:>13,.1f}"
        )
    ratio = rows[bare_name]["seconds"] / rows["augment (stream)"]["seconds"]
    print(f"augment (stream) runs at {ratio:.2f}x the speed of {bare_name}")
    if bound:
        print(
            f"compute bound at {peak:.0f} dense bf16 TFLOP/s: {bound:.2f} s for this work "
            f"({bound * 1e9 / raw_tokens / 3600:,.1f} GPU-h per 1B raw tokens); bare reaches "
            f"{bound / rows[bare_name]['seconds']:.0%} of it"
        )
    else:
        print("compute bound: n/a (no GPU with a known peak found)")
    result = {
        "device": device,
        "engine": args.engine,
        "smoke": smoke,
        **side["versions"],
        "parameters": n_params,
        "capacity": capacity,
        "engine_options": {k: v for k, v in options.items() if k != "llm_kwargs"},
        "documents": len(docs),
        "raw_tokens": raw_tokens,
        "prompts": len(prompts),
        "prompt_tokens": prompt_tokens,
        "demos_per_prompt": {str(k): shots.count(k) for k in sorted(set(shots))},
        "max_new_tokens": args.max_new_tokens,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "engine_startup_s": side["startup"],
        "rows": rows,
        "augment_over_bare": ratio,
        "compute_bound_s": bound,
        "peak_bf16_tflops": peak,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1))
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
