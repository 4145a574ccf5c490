"""The `openai` engine against a scripted OpenAI-compatible server on 127.0.0.1: retries, timeouts,
token-id and text prompts, the concurrency bound. (tests/test_vllm.py runs it against real vLLM.)"""

import time
from types import SimpleNamespace

from conftest import GOLDENS, HANG, assert_received_the_goldens

from ipt_data import Synthesizer
from ipt_data.engines import openai
from ipt_data.engines.openai import OpenAIEngine
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts


def engine(script, **kw):
    options = dict(base_url=script.url, retries=3, backoff=0.01, timeout=10.0, concurrency=4)  # 10 s: a loaded CI
    options.update(kw)
    return OpenAIEngine(TINY_SYNTHESIZER, **options)


def test_token_ids_go_as_they_are_and_usage_is_read(script, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-secret")
    eng = engine(script)
    out = eng.generate([[1, 5, 6], [1, 7]], max_new_tokens=20)
    assert [c.text for c in out] == [" <QUE> How long? <ANS> 3 </END>", " <QUE> How long? <ANS> 2 </END>"]
    assert [(c.prompt_tokens, c.completion_tokens, c.finish_reason) for c in out] == [(3, 7, "stop"), (2, 7, "stop")]
    bodies = [b for b, _ in script.requests if b["max_tokens"] == 20]
    assert sorted(b["prompt"] for b in bodies) == [[1, 5, 6], [1, 7]]
    assert {a for _, a in script.requests} == {"Bearer sk-local-secret"} and "sk-local" not in repr(eng)


def test_429_and_5xx_are_retried(script):
    eng = engine(script, prompt_format="token_ids", concurrency=1)
    script.failures = [429, 503, 500]
    out = eng.generate([[1, 2, 3]], max_new_tokens=5)
    assert out[0].finish_reason == "stop" and len(script.requests) == 4


def test_a_reset_is_retried_in_full_and_only_a_refusal_makes_later_requests_try_once(script, monkeypatch):
    """An overloaded server resets connections (its listen backlog full): later requests keep all their
    retries. Nothing listening (connection refused) is what makes them try once, so a dead server fails fast."""
    script.resets = 3  # the first request's two attempts, then the second's first
    eng = engine(script, prompt_format="token_ids", retries=1, concurrency=1)
    assert [c.finish_reason for c in eng.generate([[1, 5], [1, 6]], max_new_tokens=5)] == ["error", "stop"]

    pauses = []
    monkeypatch.setattr(openai, "time", SimpleNamespace(sleep=pauses.append, monotonic=time.monotonic))
    nowhere = dict(base_url="http://127.0.0.1:9/v1", retries=2, backoff=1.0, prompt_format="token_ids")
    dead = OpenAIEngine(TINY_SYNTHESIZER, concurrency=1, **nowhere)
    assert [c.finish_reason for c in dead.generate([[1, 5], [1, 6]], max_new_tokens=5)] == ["error", "error"]
    assert len(pauses) == 2 and all(0.5 <= p / 2**k < 1.5 for k, p in enumerate(pauses))  # the second: one try
    # pauses are spread by the request: two prompts that failed together do not retry together
    other = OpenAIEngine(TINY_SYNTHESIZER, **nowhere)
    assert other.generate([[1, 6]], max_new_tokens=5)[0].finish_reason == "error"
    assert len(pauses) == 4 and pauses[2] != pauses[0] and 0.5 <= pauses[2] < 1.5


def test_a_hanging_prompt_times_out_alone(script):
    eng = engine(script, prompt_format="token_ids", timeout=2.0, retries=1)  # the others answer in 0.05 s
    out = eng.generate([[1, 2], [1, HANG], [1, 3, 4]], max_new_tokens=5)
    assert [c.finish_reason for c in out] == ["stop", "error", "stop"]
    assert "attempts" in out[1].error
    client_errors = engine(script, prompt_format="token_ids", retries=3)
    script.failures = [401]
    assert client_errors.generate([[1, 2]], max_new_tokens=5)[0].finish_reason == "error"  # 401 is not retried


def test_servers_without_token_ids_get_text(script, encoder):
    script.token_ids = False
    eng = engine(script)
    ids = encoder.encode_prompt("Anna lives in Oslo.")
    out = eng.generate([ids], max_new_tokens=5)
    assert out[0].finish_reason == "stop" and eng.prompt_format == "text"
    sent = script.requests[-1][0]
    assert sent["prompt"] == "<s> <CON> Anna lives in Oslo. </CON>\n\n" and sent["add_special_tokens"] is False


def test_concurrency_is_bounded_and_order_kept(script):
    eng = engine(script, prompt_format="token_ids", concurrency=3)
    prompts = [[1] * k for k in range(1, 13)]
    out = eng.generate(prompts, max_new_tokens=5)
    assert [c.text.split("<ANS> ")[1].split()[0] for c in out] == [str(k) for k in range(1, 13)]
    assert script.max_in_flight <= 3


def test_synthesize_through_the_openai_engine(script):
    texts = synthetic_texts(5)
    out = Synthesizer(
        model=TINY_SYNTHESIZER,
        engine="openai",
        rounds=2,
        max_new_tokens=20,
        engine_options={"base_url": script.url, "retries": 1, "backoff": 0.01},
    )({"text": texts})
    assert out["synth_status"] == ["ok"] * 5 and out["inherits"] == [False, False, False, True, True]  # 0-3, 1-4, 2


def test_the_server_receives_the_golden_ids(script):
    """SPEC 1: the token ids a server receives are exactly the goldens' (transformers 4.44's) for the same texts."""
    cases = [c for c in GOLDENS["prompts"] if not c["demos"] and c["text"].strip()]
    out = Synthesizer(
        model=TINY_SYNTHESIZER,
        engine="openai",
        rounds=1,
        max_model_len=100_000,
        max_new_tokens=4,
        engine_options={"base_url": script.url, "retries": 1, "backoff": 0.01, "prompt_format": "token_ids"},
    )({"text": [c["text"] for c in cases]})
    assert len(cases) > 50
    assert_received_the_goldens([body["prompt"] for body, _ in script.requests], cases, out)
