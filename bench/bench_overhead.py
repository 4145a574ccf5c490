"""Our own CPU work per document, and whether it slows a GPU down (issue 23).

    python bench/bench_overhead.py [--docs 5000] [--raw-docs 50000] [--sim-docs 3000] [--repeats 3]
                                   [--speeds 1.375,2.75] [--parts ab] [--out ...]

Documents: English prose from the standard library's docstrings (`prose_corpus.py`, median ~330 words,
log-normal lengths). M = 2, shard 4,096, batch 512, the tiny fixture's tokenizer (= Mistral-7B-v0.1's).
Every side runs `augment` (the code behind `ipt-data augment`) into a fresh folder, with a fresh encoder (as a
new process would have: nothing remembered from the run before), sides interleaved, medians of `--repeats`.

(a) The instant engine (`simulated_gpu.Instant`: every prompt answered at once with one fixed completion of
three pairs), so only our own work remains. Each stage's seconds from the run report, per document:
- "file pipeline": `IPT_DATA_FAST_TOKENIZER=0`, every text through the tokenizer file's own pipeline (the
  encoding before the piecewise path; it now calls `encode_batch_fast`, which is at least as fast as the
  `encode_batch` it used, so the ratio understates the gain) and every prompt part encoded whole;
- "piecewise": the default: the exact piecewise path, each text tokenized once;
at `--fraction` 1 and 0.2, and `--fraction 0` on `--raw-docs` rows (counting raw rows is then all there is).
Plus tokens/s of plain encoding: the file's pipeline vs the piecewise path (its memo empty, then full).
The engine is instant and TOKENIZERS_PARALLELISM=false, so a stage's seconds are CPU seconds of one core.

(b) A simulated GPU (`simulated_gpu.SimulatedGPU`: continuous batching, up to 512 sequences, a step of
12 ms plus the admitted prompt tokens at 40,000 tokens/s, divided by `speed`; 250 tokens per completion; its
loop runs in a thread of this process and needs the GIL between steps). At each `--speeds` value: "bare"
submits every prompt that `augment` sends (recorded in a warm-up run) at once and waits for the last; "augment"
runs the whole job (read, chunk, synthesize, templify, count, write, mix, statistics, card, publish). Printed:
generated tokens/s, the ratio augment : bare end to end, the engine's own span (first prompt in to last
completion out), the time before the first prompt and after the last completion, and the seconds the engine
thread started its steps late (our Python holding the GIL would show there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import wait
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from prose_corpus import documents, write_jsonl  # noqa: E402
from side_by_side import augment_runner, interleaved, recorded_prompts  # noqa: E402
from simulated_gpu import Instant, SimulatedGPU  # noqa: E402

from ipt_data.engines import load_engine, register_engine  # noqa: E402
from ipt_data.method import tokenizer as budget  # noqa: E402
from ipt_data.testing.fixtures import TINY_SYNTHESIZER  # noqa: E402

STAGES = ("chunk", "synthesize", "templify", "count", "shard_stats", "write")
register_engine("instant", lambda model, device, **o: Instant(model, device, **o))
register_engine("simulated-gpu", lambda model, device, **o: SimulatedGPU(model, device, **o))


@contextlib.contextmanager
def tokenizer_path(fast: bool):
    """Encoders made inside use the piecewise path or not; none is remembered from before (a fresh memo)."""
    old = os.environ.get(budget.FAST_ENV)
    os.environ[budget.FAST_ENV] = "1" if fast else "0"
    budget._cached_encoder.cache_clear()
    try:
        yield
    finally:
        budget._cached_encoder.cache_clear()
        if old is None:
            os.environ.pop(budget.FAST_ENV, None)
        else:
            os.environ[budget.FAST_ENV] = old


def cpu_side(tmp: Path, corpus: Path, fraction: float, fast: bool, name: str):
    run = augment_runner(
        tmp, name, dataset=str(corpus), model=TINY_SYNTHESIZER, engine="instant", rounds=2, fraction=fraction,
        shard_size=4096, batch_size=512,
    )  # fmt: skip

    def side():
        with tokenizer_path(fast):
            seconds, tokens, prompts = run("rounds")
        side.stages.append(run.stages["rounds"])
        return seconds, tokens, prompts

    side.stages = []
    return side


def per_doc(stages: list[dict], n: int) -> dict:
    """Median ms per document of each stage, and of the shard phase's stages together."""
    out = {s: 1000 * statistics.median(run.get(s, 0.0) for run in stages) / n for s in STAGES}
    out["shard_stages"] = 1000 * statistics.median(sum(run.get(s, 0.0) for s in STAGES) for run in stages) / n
    return out


def bench_cpu(args, tmp: Path) -> dict:
    corpus = write_jsonl(tmp / "prose.jsonl", documents(args.docs))
    raw_corpus = write_jsonl(tmp / "prose-raw.jsonl", documents(args.raw_docs, seed=1))
    result = {}
    for label, path, fraction, n in [
        ("fraction 1", corpus, 1.0, args.docs),
        ("fraction 0.2", corpus, 0.2, args.docs),
        ("fraction 0 (raw rows)", raw_corpus, 0.0, args.raw_docs),
    ]:
        print(f"(a) {label}: {n} documents", flush=True)
        sides = {
            "file pipeline": cpu_side(tmp, path, fraction, False, f"{fraction}-file"),
            "piecewise": cpu_side(tmp, path, fraction, True, f"{fraction}-fast"),
        }
        rows = interleaved(sides, args.repeats)
        result[label] = {name: {**per_doc(fn.stages, n), "wall_s": rows[name]["seconds"]} for name, fn in sides.items()}
        a, b = result[label]["file pipeline"], result[label]["piecewise"]
        result[label]["ratio"] = {k: a[k] / b[k] for k in ("shard_stages", "count") if b[k]}
    result["encode"] = encode_speed(documents(args.docs))
    return result


def encode_speed(texts: list[str]) -> dict:
    """Tokens/s of plain encoding: the file's own pipeline vs the piecewise path (empty memo, then full)."""
    file = budget.PromptEncoder(TINY_SYNTHESIZER, fast=False)
    fast = budget.PromptEncoder(TINY_SYNTHESIZER, fast=True)
    out = {}
    for name, fn in [
        ("file pipeline", lambda: file.text_ids(texts)),
        ("piecewise, empty memo", lambda: fast.text_ids(texts)),
        ("piecewise, full memo", lambda: fast.text_ids(texts)),
    ]:
        t = time.process_time()
        ids = fn()
        seconds = time.process_time() - t
        out[name] = sum(map(len, ids)) / seconds
    return out


def bench_gpu(args, tmp: Path) -> dict:
    corpus = write_jsonl(tmp / "prose-sim.jsonl", documents(args.sim_docs, seed=2))
    result = {}
    for speed in args.speeds:
        options = {"speed": speed}
        engine = load_engine(TINY_SYNTHESIZER, "simulated-gpu", max_model_len=4096, **options)
        run = augment_runner(
            tmp, f"sim-{speed}", dataset=str(corpus), model=TINY_SYNTHESIZER, engine="simulated-gpu",
            engine_options=options, rounds=2, shard_size=4096, batch_size=512,
        )  # fmt: skip
        probe = budget.get_encoder(TINY_SYNTHESIZER).context_ids(["Ping."])[0]
        print(f"(b) speed {speed}: warm-up run, recording the prompts", flush=True)
        prompts = recorded_prompts(engine, run, probe)

        def bare(engine=engine, prompts=prompts):
            futures = [engine.submit(p, max_new_tokens=400) for p in prompts]
            wait(futures)
            return time.perf_counter() - engine.stats["first_submit"], engine.stats["tokens"], len(prompts)

        def whole(run=run):
            # the tokenizer stays loaded (as the engine does), but every piece is learned anew, as in a new process
            budget.get_encoder(TINY_SYNTHESIZER).pieces.forget()
            return run("stream")

        @contextlib.contextmanager
        def measured(engine=engine):
            engine.reset_stats()
            started = time.perf_counter()
            held = {}
            yield held
            st = engine.reset_stats()
            held.update(
                head_s=st["first_submit"] - started,
                engine_s=st["last_done"] - st["first_submit"],
                tail_s=time.perf_counter() - st["last_done"],
                late_s=st["late_s"],
                busy_s=st["busy_s"],
                steps=st["steps"],
            )

        rows = interleaved({"bare": bare, "augment": whole}, args.repeats, around=measured)
        for row in rows.values():
            held = row.pop("around")
            row.update({k: statistics.median(h[k] for h in held) for k in held[0]})
        result[f"speed {speed}"] = {
            **rows,
            "end_to_end": rows["bare"]["seconds"] / rows["augment"]["seconds"],
            "engine_span": rows["bare"]["engine_s"] / rows["augment"]["engine_s"],
        }
    return result


def report_cpu(cpu: dict) -> None:
    print("\n(a) CPU ms per document by stage (instant engine; medians)")
    for label in ("fraction 1", "fraction 0.2", "fraction 0 (raw rows)"):
        print(f"  {label}")
        for name in ("file pipeline", "piecewise"):
            row = cpu[label][name]
            stages = "  ".join(f"{s} {row[s]:.2f}" for s in STAGES)
            print(f"    {name:14s} shard stages {row['shard_stages']:.2f} ms/doc   ({stages})")
        ratio = cpu[label]["ratio"]
        print(f"    file pipeline : piecewise = {ratio['shard_stages']:.1f}x (stages), {ratio['count']:.1f}x (count)")
    print("  plain encoding, tokens/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in cpu["encode"].items()))


def report_gpu(gpu: dict) -> None:
    print("\n(b) simulated GPU: augment vs bare generation of the same prompts (medians)")
    for label, row in gpu.items():
        b, a = row["bare"], row["augment"]
        print(
            f"  {label}: bare {b['seconds']:.1f} s ({b['tokens_per_s']:,.0f} tok/s), augment {a['seconds']:.1f} s "
            f"({a['tokens_per_s']:,.0f} tok/s): end to end {row['end_to_end']:.3f}x; engine span "
            f"{row['engine_span']:.3f}x; augment's head {a['head_s']:.2f} s, tail {a['tail_s']:.2f} s; steps late "
            f"{a['late_s']:.2f} s (bare {b['late_s']:.2f} s)"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--raw-docs", type=int, default=50_000)
    ap.add_argument("--sim-docs", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--speeds", type=lambda s: [float(x) for x in s.split(",")], default=[1.375, 2.75])
    ap.add_argument("--parts", default="ab", help="a: CPU per document; b: simulated GPU")
    ap.add_argument("--out", default="bench/results/overhead.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cpu = bench_cpu(args, Path(tmp)) if "a" in args.parts else {}
        gpu = bench_gpu(args, Path(tmp)) if "b" in args.parts else {}
    if cpu:
        report_cpu(cpu)
    if gpu:
        report_gpu(gpu)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {"machine": platform.platform(), "python": sys.version, "args": vars(args), "cpu": cpu, "gpu": gpu},
            indent=1,
            default=str,
        )  # fmt: skip
    )
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
