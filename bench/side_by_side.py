"""What `bench_engines.py` and `bench_gpu.py` share: `augment` runs into fresh folders, the prompts a warm-up
run sends, and sides timed in interleaved repeats (this machine is noisy; noise then hits every side alike)."""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def augment_runner(tmp: Path, name: str, **config) -> Callable[[str], tuple[float, int, int]]:
    """`run(pipeline) -> (seconds, completion tokens, prompts)`: `augment` with `config` and that pipeline, into
    a fresh folder under `tmp`. `run.stages[pipeline]` holds the last run's seconds by stage."""
    from ipt_data.config import AugmentConfig
    from ipt_data.run import augment

    stages: dict[str, dict] = {}

    def run(pipeline: str) -> tuple[float, int, int]:
        out = tmp / f"out-{name}-{pipeline}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(tmp / f"out-{name}-{pipeline}.work", ignore_errors=True)
        start = time.perf_counter()
        report = augment(AugmentConfig(**config, pipeline=pipeline, output=str(out)), progress=False)
        seconds = time.perf_counter() - start
        assert report["accounted"], "every row must be accounted for"
        stages[pipeline] = {k: round(v, 3) for k, v in report["seconds"].items()}
        return seconds, report["completion_tokens"], report["chunks"]

    run.stages = stages
    return run


def recorded_prompts(engine, run: Callable[[str], object], probe: list[int]) -> list[list[int]]:
    """The prompts a streaming `run("stream")` sends to `engine`, recorded in a warm-up run (which also warms
    caches and compiles); not the pre-flight's `probe`."""
    seen: list[list[int]] = []
    submit = engine.submit

    def spy(prompt, **kwargs):
        seen.append(list(prompt))
        return submit(prompt, **kwargs)

    engine.submit = spy
    try:
        run("stream")
    finally:
        del engine.submit
    return [p for p in seen if len(p) > 1 and p != probe]


def interleaved(
    sides: dict[str, Callable], repeats: int, around: Callable | dict[str, Callable] | None = None
) -> dict[str, dict]:
    """Each side `repeats` times, interleaved, each call inside `around()` when given (one for all sides, or one
    per side's name). Per side: the median seconds, tokens and prompts per second from it, every run's seconds,
    and `around`'s objects."""
    runs: dict[str, list] = {name: [] for name in sides}
    held: dict[str, list] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            wrap = around.get(name) if isinstance(around, dict) else around
            with (wrap or contextlib.nullcontext)() as context:
                runs[name].append(fn())
            held[name].append(context)
            print(f"    {name}: {runs[name][-1][0]:.2f} s", flush=True)
    rows = {}
    for name, values in runs.items():
        seconds = statistics.median(v[0] for v in values)
        tokens, prompts = values[0][1], values[0][2]
        rows[name] = {
            "seconds": seconds,
            "all_seconds": [v[0] for v in values],
            "tokens": tokens,
            "prompts": prompts,
            "tokens_per_s": tokens / seconds,
            "prompts_per_s": prompts / seconds,
            "around": held[name],
        }
    return rows
