"""Streaming synthesis (issue 17): each chain's next prompt goes to the engine as soon as its previous one is
back, across batches and shards. The output must be the one the round-by-round design gives, a failing
prompt must cost only its row, and a run killed while streaming must resume byte-identically."""

import json
import os
import random
import re
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from conftest import Script, serve
from test_pipeline import files_of, kill_and_resume
from test_synthesize import Scripted

from ipt_data import Synthesizer
from ipt_data.engines import StreamingEngine
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts

ROOT = Path(__file__).resolve().parents[1]


class Streaming(Scripted):
    """`Scripted`'s answers, but through `submit`: each prompt is answered by its own thread after a delay
    drawn from the prompt, so prompts come back out of order. Records the order prompts are sent in and the
    most prompts outstanding at once. Prompts of a text holding POISON make `submit` raise (`poison="submit"`)
    or their future raise (`poison="future"`)."""

    def __init__(self, encoder, poison="submit", hold=None, release_on=range(17, 24)):
        super().__init__(encoder)
        self.poison, self.sent, self.outstanding, self.most = poison, [], 0, 0
        self.hold = hold  # the text whose answer waits for `released`; recorded in `sent` as "answered"
        self.released = threading.Event()  # set once a prompt of a text in `release_on` has gone out
        self.release_on = release_on  # by default the chains' last texts of the first batch (17-23)
        self.lock = threading.Lock()
        self.threads = []

    def submit(self, prompt, **kwargs):
        text = self.encoder.decode(prompt)
        if "POISON" in text.rsplit("<CON>", 1)[-1] and self.poison == "submit":
            raise RuntimeError("the engine crashed on this prompt")
        k = int(re.findall(r"<CON> text (\d+)", text)[-1])
        with self.lock:
            self.sent.append(k)
            self.outstanding += 1
            if k in self.release_on:
                self.released.set()
            self.most = max(self.most, self.outstanding)
        future = Future()

        def answer():
            if k == self.hold:
                self.released.wait(30)  # a design that cannot send 17-23 first times out here, and fails below
            else:
                time.sleep(random.Random(len(prompt)).random() * 0.01)
            with self.lock:
                self.outstanding -= 1
                if k == self.hold:
                    self.sent.append("answered")
            if future.set_running_or_notify_cancel():  # else the caller cancelled it
                if "POISON" in text.rsplit("<CON>", 1)[-1]:
                    future.set_exception(RuntimeError("the engine crashed on this prompt"))
                else:
                    future.set_result(super(Streaming, self).generate([prompt])[0])

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        self.threads.append(thread)
        return future


def batches(n_batches=5, size=24, poison=()):
    """`text k ...` rows with lengths that vary, so that a few chains outgrow the budget and break."""
    out = []
    for b in range(n_batches):
        texts = []
        for k in range(b * size, (b + 1) * size):
            words = " ".join(f"w{j}" for j in range(k % 7 * 40))
            texts.append(f"text {k} is here. {words}" + (" POISON" if k in poison else ""))
        out.append({"text": texts, "doc_id": list(range(b * size, (b + 1) * size))})
    return out


def synth(encoder, engine, **kw):
    options = dict(model="unused", tokenizer=encoder, rounds=3, engine=engine, max_model_len=1200, max_new_tokens=40)
    return Synthesizer(**{**options, **kw})


def test_streaming_gives_the_round_by_round_output_across_batches(encoder):
    engine = Streaming(encoder)
    assert isinstance(engine, StreamingEngine) and not isinstance(Scripted(encoder), StreamingEngine)
    streamed = list(synth(encoder, engine).stream(batches()))
    by_rounds = [synth(encoder, Scripted(encoder))(b) for b in batches()]
    assert streamed == by_rounds
    assert any(s > 0 for out in streamed for s in out["shot"]) and any(any(out["inherits"]) for out in streamed)
    assert any(out["shot"][i] == 0 and i >= 8 for out in streamed for i in range(24)), "some chains broke"
    # streamed chain by chain: while text 0's answer is held back, other chains of its batch go on to their
    # last round (texts 17-23), which a round-by-round design (per batch or per shard) cannot do
    held = Streaming(encoder, hold=0)
    assert list(synth(encoder, held).stream(batches())) == by_rounds
    answered = held.sent.index("answered")
    assert any(k in held.sent[:answered] for k in range(17, 24))
    assert held.sent[:answered].count(0) == 1 and 16 not in held.sent[:answered]  # text 0's chain waits
    # the same with pipeline="rounds" on a streaming engine, and through __call__ batch by batch
    assert list(synth(encoder, Streaming(encoder), pipeline="rounds").stream(batches())) == by_rounds
    assert [synth(encoder, Streaming(encoder))(b) for b in batches()] == by_rounds


def test_prompts_in_flight_are_bounded(encoder):
    engine = Streaming(encoder)
    out = list(synth(encoder, engine, max_in_flight=10).stream(batches(6)))
    assert len(out) == 6 and engine.most <= 10 + 8  # the bound, overshot by at most one batch's chains


class Crashing(Scripted):
    """`Scripted`, whose `generate` raises for any list holding a POISON text (the round-by-round design then
    narrows it down to the prompt, `generate_isolated`)."""

    def generate(self, prompts, **kwargs):
        if any("POISON" in self.encoder.decode(p).rsplit("<CON>", 1)[-1] for p in prompts):
            raise RuntimeError("the engine crashed on this prompt")
        return super().generate(prompts, **kwargs)


@pytest.mark.parametrize("poison", ["submit", "future"])
def test_a_failing_prompt_costs_only_its_row(encoder, poison):
    streamed = list(synth(encoder, Streaming(encoder, poison)).stream(batches(poison={5, 30, 31})))
    status = [s for out in streamed for s in out["synth_status"]]
    assert [k for k, s in enumerate(status) if s.startswith("engine_error")] == [5, 30, 31]
    assert "crashed on this prompt" in status[5]
    assert streamed == [synth(encoder, Crashing(encoder))(b) for b in batches(poison={5, 30, 31})]
    clean = [s for b in batches() for s in synth(encoder, Scripted(encoder))(b)["synth_status"]]
    assert [s for k, s in enumerate(status) if k not in {5, 30, 31}] == [
        s for k, s in enumerate(clean) if k not in {5, 30, 31}
    ]


def _augment_cli(out: Path, url: str) -> list[str]:
    options = {"base_url": url, "retries": 1, "backoff": 0.01, "timeout": 5, "prompt_format": "token_ids"}
    return [
        sys.executable,
        "-m",
        "ipt_data",
        "augment",
        "--dataset",
        str(out.parent / "corpus.jsonl"),
        "--model",
        TINY_SYNTHESIZER,
        "--engine",
        "openai",
        "--engine-options",
        json.dumps(options),
        "--shard-size",
        "6",
        "--batch-size",
        "6",
        "--output",
        str(out),
        "--work-dir",
        str(out.parent / "work"),
        "--max-in-flight",  # the flag as a user types it; 3 chains per shard, so it holds none back
        "3",
        "--no-progress",
    ]


def test_a_kill_while_streaming_resumes_byte_identically(tmp_path):
    """SIGKILL while two shards stream through the openai engine (a local server answering in 50 ms); the
    rerun reuses the finished shards and publishes what an uninterrupted run publishes."""
    script = Script()
    server = serve(script)
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(60, seed=17)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out, work = tmp_path / "out", tmp_path / "work"
    try:
        expected, done, report = kill_and_resume(_augment_cli(out, url), out, work, env, 2)
        assert 0 < done < 10, "the kill must land mid-run"
        assert report["shards"]["reused"] >= 2
        assert files_of(out) == expected
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_dying_while_two_shards_stream_stops_the_run(tmp_path, script, capsys):
    """Shards 0 and 1 stream at once; the server dies after 3 answers: the run stops with exit 2 and
    publishes nothing; once the server is back a rerun publishes what an uninterrupted run does."""
    from ipt_data.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in synthetic_texts(24, seed=4)))

    def run(out: Path) -> int:
        argv = _augment_cli(out, script.url)[3:]
        argv[argv.index("--work-dir") + 1] = str(out) + ".work"
        return main([*argv, "--engine-retry-wait", "0.01"])  # the retries, quickly: the server stays down

    script.down_after = 1 + 3  # the probe, then 3 answers: whichever shard got them still fails on 3 or more
    started = time.time()
    assert run(tmp_path / "out") == 2 and time.time() - started < 60
    assert "the engine still failed on" in capsys.readouterr().err and not (tmp_path / "out").exists()
    script.down_after = None
    assert run(tmp_path / "out") == 0 and run(tmp_path / "fresh") == 0
    assert files_of(tmp_path / "out" / "data") == files_of(tmp_path / "fresh" / "data")


def test_a_stopped_stream_raises_soon_and_cancels_what_it_queued(encoder):
    from ipt_data.errors import RunStoppedError

    engine, stop = Streaming(encoder, hold=0, release_on=()), threading.Event()  # held until the stop
    threading.Timer(0.1, stop.set).start()
    started = time.time()
    with pytest.raises(RunStoppedError):
        list(synth(encoder, engine).stream(batches(), stop=stop))
    assert time.time() - started < 2
    engine.released.set()
    for thread in engine.threads:
        thread.join()
