import pytest
import torch

from ipt_data.engines import Completion, Engine, load_engine, resolve_device
from ipt_data.engines.hf import HFEngine
from ipt_data.method.tokenizer import PromptEncoder
from ipt_data.method.wire import parse_pairs
from ipt_data.testing.fixtures import synthetic_texts

GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def engine(model_path):
    return load_engine(model_path, "hf")


@pytest.fixture(scope="module")
def prompts(encoder):
    texts = synthetic_texts(12, seed=7)
    texts[3] = texts[3] + " " + texts[4]  # vary the lengths
    return encoder.context_ids(texts)


def test_engine_protocol_and_cache(engine, model_path):
    assert isinstance(engine, Engine) and isinstance(engine, HFEngine)
    assert load_engine(model_path, "hf") is engine
    if not GPU:  # with a GPU and vLLM installed, auto is vllm
        assert load_engine(model_path, "auto") is engine
    assert load_engine(model_path, "hf", batch_size=2) is not engine
    with pytest.raises(ValueError, match="unknown engine"):
        load_engine(model_path, "nope")


@pytest.mark.skipif(GPU, reason="this machine has GPUs")
def test_device_by_rank_without_gpus():
    assert resolve_device(None) == resolve_device(0) == resolve_device(5) == "cpu"
    assert resolve_device(1, "cuda:3") == "cuda:3"


def test_greedy_completions_in_the_wire_format(engine, prompts):
    out = engine.generate(prompts, max_new_tokens=200)
    assert len(out) == len(prompts) and all(isinstance(c, Completion) for c in out)
    for p, c in zip(prompts, out, strict=True):
        assert c.prompt_tokens == len(p) and 0 < c.completion_tokens <= 200
        assert c.finish_reason in ("stop", "length") and c.error is None
    assert sum(bool(parse_pairs(c.text)) for c in out) >= 0.9 * len(out)
    assert sum(c.finish_reason == "stop" for c in out) >= 0.9 * len(out)


def test_batched_equals_one_by_one(engine, prompts, model_path):
    single = HFEngine(model_path, batch_size=1)
    batched = engine.generate(prompts, max_new_tokens=120)
    assert [c.text for c in batched] == [c.text for c in single.generate(prompts, max_new_tokens=120)]
    # and the order of the input is kept although prompts run sorted by length
    assert [c.text for c in engine.generate(prompts[::-1], max_new_tokens=120)] == [c.text for c in batched][::-1]


def test_bad_prompts_fail_alone(engine, prompts, model_path):
    long = prompts[0] * 200
    out = engine.generate([prompts[0], long, [], prompts[1]], max_new_tokens=50)
    assert [c.finish_reason == "error" for c in out] == [False, True, True, False]
    assert "max_model_len" in out[1].error and out[1].prompt_tokens == len(long)


def test_a_failing_batch_is_split_down_to_the_bad_prompt(model_path, prompts, monkeypatch):
    eng = HFEngine(model_path, batch_size=8)
    poison = prompts[5]
    real = eng._generate

    def flaky(batch, *args):
        if any(list(p) == list(poison) for p in batch):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(batch, *args)

    monkeypatch.setattr(eng, "_generate", flaky)
    out = eng.generate(prompts, max_new_tokens=60)
    bad = [i for i, c in enumerate(out) if c.finish_reason == "error"]
    assert bad == [5] and "out of memory" in out[5].error
    assert all(c.text for i, c in enumerate(out) if i != 5)


def test_encoder_and_engine_agree_on_eos(engine, encoder: PromptEncoder):
    assert engine.eos_id == encoder.eos_id


def test_a_loaded_engine_is_frozen_out_of_the_collector_and_freed_when_the_cache_is_cleared():
    """After an engine loads, what exists is frozen out of the garbage collector's passes (they would walk the
    imported modules again and again); clearing the cache unfreezes it, so a dropped engine held in a reference
    cycle is collected, not kept for the life of the process."""
    import gc
    import weakref

    from ipt_data.engines import clear_cache, register_engine, unregister_engine

    class Cyclic:
        def __init__(self, model, device, **_):
            self.me = self  # a cycle: only the collector frees it

        def generate(self, prompts, **_):
            return [Completion("", 0) for _ in prompts]

    clear_cache()
    register_engine("cyclic-test", lambda model, device, **o: Cyclic(model, device))
    try:
        ref = weakref.ref(load_engine("tiny", "cyclic-test", device="cpu"))
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert ref() is not None  # cached
        clear_cache()
        assert gc.get_freeze_count() == 0
        assert ref() is None  # collected: it was not left frozen
    finally:
        unregister_engine("cyclic-test")
        clear_cache()
