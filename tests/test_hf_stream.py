"""The `hf` engine with continuous batching (issue 26), on the CPU with a small cache: its greedy completions
are the static engine's, a failing prompt costs only its row, and a cancelled prompt leaves the manager."""

import json
import os
import sys
import threading

import pytest
import torch

from ipt_data import Synthesizer
from ipt_data.engines import StreamingEngine, load_engine
from ipt_data.engines.hf import HFEngine
from ipt_data.engines.hf_stream import HFStreamingEngine
from ipt_data.errors import RunStoppedError
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts

SMALL = dict(cache_blocks=32, page_size=32, max_batch_tokens=512, max_requests_per_batch=8, cuda_graphs=False)
POISON = [1, 10**6, 5]  # a token id past the vocabulary: the model's embedding raises on it


@pytest.fixture(scope="module")
def static():
    return HFEngine(TINY_SYNTHESIZER, device="cpu")


@pytest.fixture(scope="module")
def streaming():
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(encoder):
    texts = synthetic_texts(10, seed=11)
    texts[2] = texts[2] + " " + texts[3]  # lengths vary
    return encoder.context_ids(texts)


def test_streaming_hf_completions_equal_the_static_engines(static, streaming, prompts):
    assert isinstance(streaming, StreamingEngine) and not isinstance(static, StreamingEngine)
    expected = static.generate(prompts, max_new_tokens=200)  # the fixture's completions end at EOS by 170
    assert streaming.generate(prompts, max_new_tokens=200) == expected
    assert {c.finish_reason for c in expected} == {"stop"} and len({c.text for c in expected}) > 5
    assert streaming.generate(prompts[:3], max_new_tokens=40) == static.generate(prompts[:3], max_new_tokens=40)
    futures = [streaming.submit(p, max_new_tokens=200) for p in reversed(prompts)]  # any order, one at a time
    assert [f.result() for f in reversed(futures)] == expected
    assert streaming.in_flight == 0


def test_chains_streamed_through_the_manager_equal_static_rounds(streaming):
    texts = synthetic_texts(16, seed=12)
    batches = [{"text": texts[k : k + 8]} for k in range(0, 16, 8)]
    options = dict(model=TINY_SYNTHESIZER, rounds=3, max_new_tokens=60)
    streamed = list(Synthesizer(**options, engine=streaming).stream(batches))
    static = list(Synthesizer(**options, engine="hf", pipeline="rounds").stream(batches))
    assert streamed == static
    assert sum(s == "ok" for out in static for s in out["synth_status"]) > 10


def test_a_failing_prompt_costs_only_its_row(static, streaming, prompts, monkeypatch):
    """The poisoned prompt fails the step it shares with others; they are retried alone and succeed."""
    failed_among_others = []
    original = HFStreamingEngine._finished

    def spy(self, output):
        if output.error is not None:
            failed_among_others.append(output.request_id)
        return original(self, output)

    monkeypatch.setattr(HFStreamingEngine, "_finished", spy)
    batch = prompts[:4] + [POISON] + prompts[4:]
    out = streaming.generate(batch, max_new_tokens=24)
    expected = static.generate(prompts, max_new_tokens=24)
    assert out[4].finish_reason == "error" and "index out of range" in out[4].error
    assert out[:4] + out[5:] == expected
    assert len(failed_among_others) > 2  # the others did fail with it first


def test_a_manager_whose_loop_dies_is_replaced_and_its_prompts_retried(static, prompts):
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)
    try:
        futures = [engine.submit(p, max_new_tokens=200, temperature=0.0) for p in prompts]
        first = engine._manager
        first.stop(block=True, hard_stop=True)  # its prompts come back failed, or not at all
        assert [f.result() for f in futures] == static.generate(prompts, max_new_tokens=200)
        assert engine._manager is not first and engine._manager.is_running()
    finally:
        engine.close()


def test_cancelled_prompts_leave_the_manager_and_a_stop_cancels_what_was_queued(static, prompts, encoder):
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)
    try:
        cancelled = []
        manager_cancel = engine._manager.cancel_request
        engine._manager.cancel_request = lambda rid: (cancelled.append(rid), manager_cancel(rid))
        futures = [engine.submit(p, max_new_tokens=1000) for p in prompts]
        running = set(engine._running)
        for f in futures:
            f.cancel()
        assert engine.in_flight == 0 and set(cancelled) == running and len(running) == len(prompts)
        assert engine.generate(prompts[:2], max_new_tokens=16) == static.generate(prompts[:2], max_new_tokens=16)

        stop = threading.Event()
        sent = threading.Event()
        submit = engine.submit

        def submit_then_stop(*args, **kwargs):
            future = submit(*args, **kwargs)
            sent.set()
            stop.set()  # the run is stopped while its first prompts are in the engine
            return future

        engine.submit = submit_then_stop
        cancelled.clear()
        with pytest.raises(RunStoppedError):
            list(
                Synthesizer(model=TINY_SYNTHESIZER, engine=engine, max_new_tokens=1000).stream(
                    [{"text": synthetic_texts(8, seed=13)}], stop=stop
                )
            )
        assert sent.is_set() and cancelled and engine.in_flight == 0
    finally:
        engine.close()


def test_a_change_of_temperature_restarts_the_manager_between_prompts(static, streaming, prompts):
    sampled = streaming.generate(prompts[:3], max_new_tokens=16, temperature=0.8, seed=3)
    assert all(c.finish_reason in ("stop", "length") and c.completion_tokens > 0 for c in sampled)
    assert streaming._sampling == (0.8, 3)
    assert streaming.generate(prompts[:3], max_new_tokens=16) == static.generate(prompts[:3], max_new_tokens=16)
    assert streaming._sampling == (0.0, 0)


def test_load_engine_picks_the_continuous_path_on_cuda_or_when_asked(prompts):
    asked = load_engine(TINY_SYNTHESIZER, "hf", device="cpu", continuous=True, **SMALL)
    assert isinstance(asked, HFStreamingEngine)
    plain = load_engine(TINY_SYNTHESIZER, "hf", device="cpu", **SMALL)  # on a CPU: static, its settings moot
    assert type(plain) is HFEngine
    with pytest.raises(Exception, match="no such option"):
        load_engine(TINY_SYNTHESIZER, "hf", device="cpu", continuous=True, cache_blokcs=3)


def test_dummy_weights_and_ignore_eos_give_full_length_completions(prompts, tmp_path):
    options = dict(device="cpu", load_format="dummy", ignore_eos=True)
    torch.manual_seed(0)
    static = HFEngine(TINY_SYNTHESIZER, **options)
    real = HFEngine(TINY_SYNTHESIZER, device="cpu")
    assert not torch.equal(static.model.lm_head.weight, real.model.lm_head.weight)  # not the file's weights
    out = static.generate(prompts[:3], max_new_tokens=12)
    assert [(c.finish_reason, c.completion_tokens) for c in out] == [("length", 12)] * 3
    streaming = HFStreamingEngine(TINY_SYNTHESIZER, **options, **SMALL)
    try:
        streaming.model.load_state_dict(static.model.state_dict())
        assert streaming.generate(prompts[:3], max_new_tokens=12) == out
    finally:
        streaming.close()


def test_a_process_that_never_closes_its_engine_still_exits():
    """The manager's loop thread is not a daemon; without the engine's exit hook the interpreter waits for it."""
    import subprocess

    code = (
        "from ipt_data.engines.hf_stream import HFStreamingEngine\n"
        f"e = HFStreamingEngine({TINY_SYNTHESIZER!r}, device='cpu', **{SMALL!r})\n"
        "print(e.generate([[1, 5, 6, 7]], max_new_tokens=3)[0].finish_reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("length"), done.stderr[-2000:]


def test_an_idle_or_released_engine_does_not_poll_its_manager(streaming, prompts):
    """A stopped manager answers `get_result` at once: a reader polling it would spin and starve generation
    (it made transformers' own `generate_batch` 60x slower beside a released engine)."""
    streaming.generate(prompts[:1], max_new_tokens=4)
    streaming.release()
    calls = []
    manager = streaming._manager
    get_result = manager.get_result
    manager.get_result = lambda *a, **k: (calls.append(1), get_result(*a, **k))[1]
    threading.Event().wait(0.5)
    assert len(calls) <= 2  # a spinning reader makes thousands
    assert streaming.generate(prompts[:2], max_new_tokens=8) == streaming.generate(prompts[:2], max_new_tokens=8)


def test_gpu_check_smoke_installs_from_its_wheel_folder_and_prints_every_column(tmp_path):
    """bench/gpu_check.sh as the GPU machine runs it (here in smoke mode): wheels from a folder and ipt_data
    itself installed offline into a folder of their own, then bench_gpu.py --engine hf, every column printed.
    (That `make gpu-wheels`' set is enough on a bare machine was checked by hand in a venv without them.)"""
    import subprocess
    import zipfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "ipt_probe-1.0-py3-none-any.whl", "w") as wheel:  # stands for datasets & co
        wheel.writestr("ipt_probe.py", "HERE = True\n")
        wheel.writestr("ipt_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: ipt-probe\nVersion: 1.0\n")
        wheel.writestr(
            "ipt_probe-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr("ipt_probe-1.0.dist-info/RECORD", "")
    site, out = tmp_path / "site", tmp_path / "out"
    env = {**os.environ, "WHEELS": str(wheels), "GPU_CHECK_SITE": str(site), "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--smoke", "--docs", "8"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (site / "ipt_probe.py").exists() and (site / "ipt_data" / "engines" / "hf_stream.py").exists()
    assert "gpu_check: Python" in done.stdout and "transformers" in done.stdout
    header = next(line for line in done.stdout.splitlines() if "gen tok/s" in line).split()
    assert header == ["seconds", "gen", "tok/s", "prompts/s", "occupancy", "GPU-h/1B", "raw"]
    for side in ("bare generate_batch", "synthesize (stream)", "augment (stream)", "augment (static)"):
        assert any(line.startswith(side) and len(line[22:].split()) == 5 for line in done.stdout.splitlines()), side
    result = json.loads((out / "gpu-hf-smoke.json").read_text())
    assert result["engine"] == "hf" and result["smoke"] and len(result["rows"]) == 4


def test_closing_answers_every_prompt_not_yet_answered(prompts):
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)
    futures = [engine.submit(p, max_new_tokens=200) for p in prompts * 3]
    engine.close()
    answers = [f.result(timeout=60) for f in futures]
    assert any(a.error == "the hf engine was closed" for a in answers)
    assert all(a.finish_reason == "stop" or a.error == "the hf engine was closed" for a in answers)
    assert engine.submit(prompts[0], max_new_tokens=4).result().error == "the hf engine is closed"
    assert not engine._manager.is_running() and not engine._reader.is_alive()


def test_a_change_of_sampling_while_prompts_run_waits_for_them(static, prompts):
    """The manager is replaced only once none of our prompts is in it: those of the old sampling are answered."""
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)
    try:
        greedy = [engine.submit(p, max_new_tokens=200) for p in prompts[:6]]
        sampled = engine.submit(prompts[6], max_new_tokens=16, temperature=0.8, seed=1)
        assert [f.result(timeout=120) for f in greedy] == static.generate(prompts[:6], max_new_tokens=200)
        assert sampled.result(timeout=120).completion_tokens > 0 and engine.in_flight == 0
    finally:
        engine.close()


def test_one_poisoned_prompt_among_many_costs_a_few_retries_in_halves_and_frees_each_dead_cache(static, prompts):
    import gc
    import weakref

    from transformers.generation.continuous_batching import continuous_api

    caches, alive_at_start = [], []
    create = continuous_api.ContinuousBatchingManager._create_batch_processor

    def spy(manager):
        gc.collect()
        alive_at_start.append(sum(c() is not None for c in caches))
        processor = create(manager)
        caches.append(weakref.ref(processor.cache))
        return processor

    continuous_api.ContinuousBatchingManager._create_batch_processor = spy
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)
    try:
        batch = prompts * 2 + [POISON]  # 21 prompts, one of them poisoned
        out = engine.generate(batch, max_new_tokens=8)
    finally:
        continuous_api.ContinuousBatchingManager._create_batch_processor = create
        engine.close()
    assert out[:-1] == static.generate(prompts, max_new_tokens=8) * 2 and out[-1].finish_reason == "error"
    assert 3 <= len(alive_at_start) <= 13  # the first, then halving: ~2 log2(21) managers, not one per prompt (21)
    assert alive_at_start and max(alive_at_start) == 0  # each dead manager's cache freed before the next is made


def test_a_broken_reader_answers_every_prompt_and_stops_the_manager(prompts, monkeypatch):
    engine = HFStreamingEngine(TINY_SYNTHESIZER, device="cpu", **SMALL)

    def broken(self, output):
        raise RuntimeError("the reader broke")

    monkeypatch.setattr(HFStreamingEngine, "_finished", broken)
    futures = [engine.submit(p, max_new_tokens=200) for p in prompts]
    answers = [f.result(timeout=120) for f in futures]
    assert {a.error for a in answers} == {"the hf engine stopped: the reader broke"}
    engine._reader.join(timeout=60)
    assert not engine._reader.is_alive() and not engine._manager.is_running()  # else the process could not exit
    engine.close()
