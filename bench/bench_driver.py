"""The driver's own serial seconds (issue 24): what one process does alone, before, between and after the shards
that workers make.

    python bench/bench_driver.py [--rows 200000] [--fraction 0.2] [--gpus 2] [--baseline d81bfbf]
                                 [--out bench/results/driver.json]

Input: `--rows` documents of English prose (`prose_corpus.documents`, median ~330 words) in one JSON Lines file;
`--fraction` of them converted, the rest kept raw; the instant engine (`simulated_gpu.Instant`), M = 2, shard
4,096, batch 512, the tiny fixture's tokenizer; `--gpus` worker processes (the `processes` executor: the driver
hands shards to them). No general data.

The driver's serial seconds of a run = the wall time before the executor is handed its first shard (model
check, input opened, tokenizer, work folder) + the wall time after it gives its last result (mix, statistics,
card, publish) + the driver process's CPU seconds while the workers run (reading, hashing and handing out
rows, or only finding where they are; taking results). Each side runs in its own process, into a fresh folder:

- "baseline": the code of `--baseline` (a git revision of this repository, checked out into a temporary
  worktree and imported instead of this checkout's: the bench needs the repository's history);
- "current": this checkout.

Printed: each side's seconds by phase and its serial ms per row, and the ratio.
"""

from __future__ import annotations

import os
import sys

if os.environ.get("IPT_BENCH_CODE"):  # a side run on other code (set before ipt_data is imported; spawned workers too)
    sys.path.insert(0, os.environ["IPT_BENCH_CODE"])
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(1, str(Path(__file__).parent))

from simulated_gpu import Instant  # noqa: E402

from ipt_data.engines import register_engine  # noqa: E402

register_engine("instant", lambda model, device, **o: Instant(model, device, **o))  # in spawned workers too
ROOT = Path(__file__).resolve().parents[1]


class TimedExecutor:
    """Wraps an executor: when it got its first shard and gave its last result, and the driver's CPU seconds
    in between (this process only: the workers are other processes)."""

    def __init__(self, inner):
        self.inner, self.name, self.in_process = inner, inner.name, inner.in_process
        self.started = self.ended = self.cpu = None

    def run(self, work, tasks):
        self.started, cpu = time.perf_counter(), time.process_time()
        yield from self.inner.run(work, tasks)
        self.cpu, self.ended = time.process_time() - cpu, time.perf_counter()


def side(args) -> dict:
    """One run in this process (on the code this process imported); its phases, as JSON on stdout."""
    import ipt_data
    from ipt_data.config import AugmentConfig
    from ipt_data.run import augment
    from ipt_data.run.executors import ProcessExecutor
    from ipt_data.testing.fixtures import TINY_SYNTHESIZER

    out = Path(args.folder)
    config = AugmentConfig(
        dataset=args.corpus, model=TINY_SYNTHESIZER, engine="instant", rounds=2, fraction=args.fraction,
        shard_size=4096, batch_size=512, gpus=args.gpus, output=str(out / "out"), work_dir=str(out / "work"),
    )  # fmt: skip
    executor = TimedExecutor(ProcessExecutor(args.gpus))
    started = time.perf_counter()
    report = augment(config, progress=False, executor=executor)
    ended = time.perf_counter()
    assert report["accounted"], "every row must be accounted for"
    before, after = executor.started - started, ended - executor.ended
    return {
        "code": ipt_data.__file__,
        "rows": report["rows"]["in"],
        "before_s": before,
        "driver_cpu_during_shards_s": executor.cpu,
        "after_s": after,
        "serial_s": before + executor.cpu + after,
        "shards_wall_s": executor.ended - executor.started,
        "wall_s": ended - started,
        "report_seconds": report["seconds"],
    }


def run_side(name: str, code: Path | None, corpus: Path, tmp: Path, args) -> dict:
    folder = tmp / name
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, **({"IPT_BENCH_CODE": str(code)} if code else {})}
    command = [sys.executable, __file__, "--side", "--corpus", str(corpus), "--folder", str(folder)]
    command += ["--fraction", str(args.fraction), "--gpus", str(args.gpus)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--gpus", type=int, default=2, help="worker processes")
    ap.add_argument("--baseline", default="d81bfbf", help="git revision of the code before workers read their rows")
    ap.add_argument("--out", default="bench/results/driver.json")
    ap.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(side(args)))
        return

    from prose_corpus import documents, write_jsonl

    tmp = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    worktree = tmp / "baseline-code"
    try:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline],
                       check=True, capture_output=True)  # fmt: skip
        t = time.perf_counter()
        corpus = write_jsonl(tmp / "prose.jsonl", documents(args.rows))
        print(f"{args.rows:,} documents written in {time.perf_counter() - t:.1f} s", flush=True)
        sides = {}
        for name, code in (("baseline", worktree), ("current", None)):
            sides[name] = run_side(name, code, corpus, tmp, args)
            print(f"  {name}: {sides[name]['wall_s']:.1f} s", flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    ms = {name: 1000 * s["serial_s"] / s["rows"] for name, s in sides.items()}
    print(f"\ndriver's serial seconds, {args.rows:,} rows, fraction {args.fraction:g}, {args.gpus} worker processes")
    print(f"  {'':10} {'before':>8} {'during':>8} {'after':>8} {'serial':>8} {'ms/row':>8} {'shards':>8} {'wall':>8}")
    for name, s in sides.items():
        print(
            f"  {name:10} {s['before_s']:8.2f} {s['driver_cpu_during_shards_s']:8.2f} {s['after_s']:8.2f} "
            f"{s['serial_s']:8.2f} {ms[name]:8.4f} {s['shards_wall_s']:8.2f} {s['wall_s']:8.2f}"
        )
    print("  (before: until the first shard is handed out; during: the driver's CPU while workers run; after: mix, ")
    print("  statistics, card, publish)")
    print(f"  current : baseline, serial ms per row: {ms['current'] / ms['baseline']:.3f}; the promise: <= 0.03 ms/row")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "args": {k: v for k, v in vars(args).items() if k not in ("side", "corpus", "folder")},
        "sides": sides,
        "serial_ms_per_row": ms,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
