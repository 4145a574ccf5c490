"""Generation engines behind one protocol, cached per process (and per rank).

`load_engine(model, engine="auto"|"hf", rank=None, **options)` returns the engine serving
`model` in this process, building it on first use. With `Dataset.map(..., with_rank=True,
num_proc=N)`, rank r runs on GPU r mod n_gpus, or on the CPU when there is none.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from ipt_data.engines.base import Completion, Engine, MissingExtraError, StreamingEngine, generate_isolated
from ipt_data.errors import ConfigError
from ipt_data.registry import Registry

__all__ = [
    "Completion",
    "Engine",
    "MissingExtraError",
    "StreamingEngine",
    "generate_isolated",
    "load_engine",
    "resolve_device",
    "available_engines",
    "register_engine",
    "unregister_engine",
]

log = logging.getLogger(__name__)
_CACHE: dict[tuple, Engine] = {}  # the per-process engine cache
_CACHE_LOCK = threading.RLock()  # threads share one engine, not build two (re-entrant: wrappers load engines)
_IMPORT_PID = os.getpid()


def _fork_safe_threads(device: str) -> None:
    """In a worker forked from a process that already ran torch on the CPU (`Dataset.map(num_proc=N)`),
    OpenMP's thread pool deadlocks; one torch thread per worker process avoids it."""
    if device == "cpu" and os.getpid() != _IMPORT_PID:
        import torch

        if torch.get_num_threads() > 1:
            torch.set_num_threads(1)


def resolve_device(rank: int | None = None, device: str | None = None) -> str:
    """`device` if given, else `cuda:{rank mod n_gpus}` when GPUs are visible, else `cpu`."""
    if device:
        return device
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{(rank or 0) % n}" if n else "cpu"


def _build_hf(model: str, device: str, continuous: bool | None = None, **options: Any) -> Engine:
    """`continuous`: transformers' continuous batching (`HFStreamingEngine`); unset, on CUDA only. Where its
    manager cannot be started (a model without paged attention, say) the static engine serves instead, with
    a warning, unless `continuous=True` asked for it. The static engine ignores the continuous path's
    settings (those `HFStreamingEngine` takes beyond `HFEngine`'s), so one recipe serves a GPU and a CPU
    smoke test."""
    import inspect

    from ipt_data.engines.hf import HFEngine
    from ipt_data.engines.hf_stream import HFStreamingEngine

    static_names = set(inspect.signature(HFEngine).parameters)
    continuous_names = set(inspect.signature(HFStreamingEngine).parameters) - static_names - {"options"}
    unknown = sorted(set(options) - static_names - continuous_names)
    if unknown:  # said here: a TypeError from inside transformers must not read as one of ours
        raise TypeError(f"HFEngine() got an unexpected keyword argument {unknown[0]!r}")
    if continuous or continuous is None and device.startswith("cuda"):
        try:
            return HFStreamingEngine(model, device=device, **options)
        except Exception as exc:
            if continuous:
                raise
            log.warning("hf: no continuous batching (%s: %s); static batches instead", type(exc).__name__, exc)
    static = {k: v for k, v in options.items() if k not in continuous_names}
    return HFEngine(model, device=device, **static)


def _build_openai(model: str, device: str, **options: Any) -> Engine:
    from ipt_data.engines.openai import OpenAIEngine

    return OpenAIEngine(model, device=device, **options)


def _build_vllm(model: str, device: str, **options: Any) -> Engine:
    from ipt_data.engines.vllm import VLLMEngine

    if device.startswith("cuda:") and options.get("tensor_parallel_size", 1) == 1:
        # pin this process (and vLLM's engine process, which inherits the environment) to its GPU
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(int(device.split(":")[1]) + 1)]
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[int(device.split(":")[1])]
        log.info(
            "%s: CUDA_VISIBLE_DEVICES=%s for this process's vLLM engine", device, os.environ["CUDA_VISIBLE_DEVICES"]
        )
    return VLLMEngine(model, device=device, **options)


ENGINES: Registry[Callable[..., Engine]] = Registry(
    "engine", {"hf": _build_hf, "vllm": _build_vllm, "openai": _build_openai}
)


def register_engine(name: str, builder: Callable[..., Engine]) -> None:
    """Make `engine=name` build `builder(model, device, **options)` (custom engines, test doubles)."""
    ENGINES.register(name, builder)


def unregister_engine(name: str) -> None:
    """Forget the engine `name` (a registered custom engine or test double)."""
    ENGINES.unregister(name)


def available_engines() -> list[str]:
    return ENGINES.names()


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _pick(engine: str, device: str) -> str:
    """ "auto": vLLM when it is installed and this process has a GPU, else hf."""
    if engine != "auto":
        return engine
    return "vllm" if device.startswith("cuda") and vllm_available() else "hf"


def load_engine(model: str, engine: str = "auto", rank: int | None = None, **options: Any) -> Engine:
    """The cached engine `engine` for `model` on this process's device (see module doc)."""
    device = resolve_device(rank, options.pop("device", None))
    _fork_safe_threads(device)
    name = _pick(engine, device)
    build = ENGINES.get(name, also=("auto",))
    key = (name, model, device, tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _CACHE_LOCK:
        if key not in _CACHE:
            try:
                _CACHE[key] = build(model, device, **options)
            except TypeError as exc:
                if "unexpected keyword argument" not in str(exc):
                    raise
                raise ConfigError(
                    f"the {name!r} engine has no such option: {exc} (see the README's engine table)"
                ) from exc
            _freeze_heap()
        return _CACHE[key]


def _freeze_heap() -> None:
    """Leave what exists now (the engine, and the modules imported to build it: torch, transformers, vLLM,
    hundreds of thousands of objects) out of the cyclic garbage collector's later passes (`gc.freeze`), after
    collecting what is garbage already. Otherwise every full collection of the shard phase walks them all
    again: a fifth of a run's CPU time with a fast engine (bench/bench_quality.py, 2026-12-04). Whatever
    another thread holds at that moment is frozen too: a cycle among it is freed only by `clear_cache` or at
    exit (bounded: once per engine loaded)."""
    gc.collect()
    gc.freeze()
    atexit.unregister(gc.unfreeze)  # once: at exit all of it can be collected again (extensions check for leaks)
    atexit.register(gc.unfreeze)


def clear_cache() -> None:
    """Close and drop every cached engine of this process; what they held is collectable again: everything
    frozen (`_freeze_heap`, and any freeze made by the host process) is unfrozen and collected."""
    with _CACHE_LOCK:
        _close(list(_CACHE.values()))  # in a frame of its own: no reference to them is left here
        _CACHE.clear()
        gc.unfreeze()
        gc.collect()


def _close(engines: list[Engine]) -> None:
    for engine in engines:
        close = getattr(engine, "close", None)
        if close is not None:
            close()
