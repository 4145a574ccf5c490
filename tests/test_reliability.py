"""Reliability: dirty input, engine faults, crashes, hostile text. Nothing may be lost or duplicated."""

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipt_data import Synthesizer, build_prompt, chunk_batch, templify_batch
from ipt_data.cli import main
from ipt_data.config import AugmentConfig
from ipt_data.engines import clear_cache, load_engine, register_engine, unregister_engine
from ipt_data.method.tokenizer import get_encoder
from ipt_data.run import augment
from ipt_data.sinks import folder as FOLDER_SINK
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts

BIG = "zebra quartz lantern meadow " * 75_000  # a 2.1 MB single line
GOOD = {
    "markup_only": "<s></s><CON></CON><QUE><ANS></END>",
    "markup_in_prose": "The tag <s> opens and </s> closes; <QUE> is no question and <ANS> no answer </END>.",
    "control": "NUL \x00 bell \x07 escape \x1b[31m red \x7f delete, tab\tand form\x0cfeed.",
    "scripts": "日本語のテキスト, русский текст, العربية, हिन्दी and emoji 😀🎉 in one line.",
    "duplicate": "Anna is a baker who lives in Oslo. Every morning Anna eats bread.",
}


def bad_input_lines() -> list[str]:
    """One JSON Lines corpus with every class of bad input; lines are written by hand."""
    dump = json.dumps
    return [
        dump({"text": ""}),  # empty
        dump({"text": "  \n\t "}),  # whitespace
        dump({"text": None}),  # null
        dump({"text": 42}),  # a number
        dump({"text": ["a", "list"]}),  # a list
        dump({"text": {"nested": 1}}),  # an object
        dump({"other": "no text key"}),  # the text column missing on this row
        dump({"text": BIG}),
        *(dump({"text": t}) for t in GOOD.values()),
        dump({"text": GOOD["duplicate"]}),  # a duplicated row
        '{"text": "a lone surrogate \\ud800 here"}',  # invalid unicode, allowed by JSON's escapes
        '{"text": "corrupt line", ',  # corrupt JSON
        '"just a string"',  # valid JSON, not an object
        *(dump({"text": t}) for t in synthetic_texts(6, seed=4)),
    ]


def base_config(tmp_path, **kw) -> AugmentConfig:
    values = dict(
        model=TINY_SYNTHESIZER,
        engine="hf",
        rounds=2,
        max_model_len=2048,
        max_new_tokens=64,
        batch_size=16,
        shard_size=7,
        output=str(tmp_path / "out"),
        seed=0,
    )
    values.update(kw)
    return AugmentConfig(**values)


def run_cli(corpus: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "augment",
            "--dataset",
            str(corpus),
            "--model",
            TINY_SYNTHESIZER,
            "--output",
            str(out),
            "--no-progress",
            *extra,
        ]
    )


def test_corrupt_json_is_a_clear_error_by_default(tmp_path, capsys):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("\n".join(bad_input_lines()) + "\n")
    rc = run_cli(corpus, tmp_path / "o")
    assert rc == 2
    err = capsys.readouterr().err
    line = bad_input_lines().index('{"text": "corrupt line", ') + 1
    assert f"bad.jsonl:{line}: corrupt JSON" in err and "--bad-lines skip" in err


def test_bad_input_corpus_through_the_cli_loses_nothing(tmp_path):
    lines = bad_input_lines()
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text("\n".join(lines) + "\n\n")  # a trailing blank line is no row
    out = tmp_path / "out"
    rc = run_cli(
        corpus,
        out,
        "--engine",
        "hf",
        "--bad-lines",
        "skip",
        "--max-model-len",
        "2048",
        "--max-new-tokens",
        "64",
        "--shard-size",
        "7",
        "--publish-rejects",
    )
    assert rc == 0
    report = json.loads((out / "run_report.json").read_text())
    rows = report["rows"]
    assert rows["in"] == len(lines)
    assert rows["in"] == rows["converted"] + rows["raw"] + rows["rejected"] and report["accounted"]
    assert sum(report["status"].values()) == report["chunks"]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == rows["rejected"] == 10
    reasons = sorted(r["reason"].split(":")[0] for r in rejects)
    expected = ["empty_text"] * 3 + ["invalid_text"] * 3 + ["missing_text_column", "invalid_unicode", "corrupt_json"]
    assert reasons == sorted([*expected, "not_an_object"])
    corrupt_line = lines.index('{"text": "corrupt line", ') + 1
    assert any(f"bad.jsonl:{corrupt_line}:" in r["reason"] for r in rejects)

    import pyarrow.parquet as pq

    texts = [t for p in sorted((out / "data").glob("*.parquet")) for t in pq.read_table(p)["text"].to_pylist()]
    everything = "\n".join(texts)
    for name, text in GOOD.items():
        assert text in everything, name
    assert everything.count(GOOD["duplicate"]) >= 2  # both copies of the duplicated row are kept
    chunks = chunk_batch({"text": [BIG]}, tokenizer=TINY_SYNTHESIZER, max_model_len=2048, max_new_tokens=64)["text"]
    # the 2 MB line, whole (a text rendered with tasks loses only its surrounding whitespace)
    assert len(chunks) > 100 and all(c.strip() in everything for c in chunks)


class FaultyEngine:
    """The real hf engine, but any batch holding a POISON text raises (until `state["healed"]`), and batches
    over 4 prompts run out of memory (as a GPU would)."""

    name = "faulty"

    def __init__(self, model, device, state, **options):
        self.inner = load_engine(model, "hf", device=device, **options)
        self.max_model_len = self.inner.max_model_len
        self.poison = get_encoder(model).encode_texts(["POISON"])[0]  # "▁POISON": the normalizer prepends "▁"
        self.state = state

    def generate(self, prompts, **kwargs):
        if len(prompts) > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
        for p in prompts:
            if self._fails(p):
                if len(prompts) == 1:  # the prompt fails alone (a batch that fails is split down to its prompts)
                    self.state["failed_alone"][tuple(p)] = self.state["failed_alone"].get(tuple(p), 0) + 1
                raise ValueError("the engine crashed on this prompt (simulated)")
        return self.inner.generate(prompts, **kwargs)

    def _fails(self, p) -> bool:
        if self.state["healed"] or self.state["failed_alone"].get(tuple(p), 0) >= self.state["fail_times"]:
            return False
        return any(p[i : i + len(self.poison)] == self.poison for i in range(len(p)))


@pytest.fixture()
def faulty():
    """`engine="faulty"` for this test only; returns its state (`healed`)."""
    # `fail_times`: a poisoned prompt heals after failing alone so many times
    state = {"healed": False, "fail_times": 10**9, "failed_alone": {}}
    register_engine("faulty", lambda model, device, **options: FaultyEngine(model, device, state, **options))
    yield state
    unregister_engine("faulty")
    clear_cache()


def faulty_corpus(tmp_path) -> Path:
    texts = synthetic_texts(10, seed=8)
    texts[3] = "POISON " + texts[3]
    texts[7] = texts[7] + " POISON"
    path = tmp_path / "faulty.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_engine_faults_cost_only_their_rows(tmp_path):
    out = Synthesizer(
        model=TINY_SYNTHESIZER,
        engine=FaultyEngine(TINY_SYNTHESIZER, "cpu", {"healed": False, "fail_times": 10**9, "failed_alone": {}}),
        rounds=2,
        max_new_tokens=64,
    )({"text": [p["text"] for p in map(json.loads, faulty_corpus(tmp_path).open())]})
    status = out["synth_status"]
    assert [i for i, s in enumerate(status) if s.startswith("engine_error")] == [3, 7]
    assert "crashed on this prompt" in status[3]
    assert sum(s == "ok" for s in status) >= 7  # the out-of-memory batches were split, not failed


def published_files(out: Path) -> dict:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_engine_errors_are_kept_raw_only_when_asked(tmp_path, faulty, capsys):
    corpus = faulty_corpus(tmp_path)
    out = tmp_path / "raw"
    assert run_cli(corpus, out, "--engine", "faulty", "--on-engine-error", "raw", "--max-new-tokens", "48") == 0
    report = json.loads((out / "run_report.json").read_text())
    assert report["status"]["engine_error"] == 2 and report["accounted"]
    assert report["raw_texts"]["engine_error"] >= 1  # counted apart from texts with no pair parsed
    assert "published raw because the engine failed on them" in capsys.readouterr().err
    card = (out / "README.md").read_text()
    shown = f"| texts raw: the engine failed on them (--on-engine-error raw) | {report['raw_texts']['engine_error']} |"
    assert shown in card
    # a later run without `raw` redoes the shard that holds them, even though it is done
    faulty["healed"] = True
    assert run_cli(corpus, out, "--engine", "faulty", "--max-new-tokens", "48") == 0
    assert run_cli(corpus, tmp_path / "fresh", "--engine", "faulty", "--max-new-tokens", "48") == 0
    data = {k: v for k, v in published_files(out).items() if k.startswith("data/")}
    assert data and data == {k: v for k, v in published_files(tmp_path / "fresh").items() if k.startswith("data/")}


def test_engine_errors_are_retried_within_the_run_then_left_for_the_next(tmp_path, faulty, capsys):
    corpus = faulty_corpus(tmp_path)
    fast = ("--engine", "faulty", "--engine-retry-wait", "0.01", "--max-new-tokens", "48")
    faulty["healed"] = True
    assert run_cli(corpus, tmp_path / "uninterrupted", *fast) == 0
    expected = published_files(tmp_path / "uninterrupted")

    faulty["healed"] = False  # down through the retries: the run stops, nothing published, the rerun goes on
    assert run_cli(corpus, tmp_path / "out", *fast) == 2
    error = capsys.readouterr().err
    assert re.search(r"the engine still failed on \d+ of \d+ prompts after 3 retries", error), error
    assert not (tmp_path / "out").exists() and not list((tmp_path / "out.work" / "shards").glob("*.done.json"))
    faulty["healed"] = True
    assert run_cli(corpus, tmp_path / "out", *fast) == 0
    assert published_files(tmp_path / "out") == expected

    # each poisoned prompt fails once, then works: healed within this run's retries (a chain's later prompt holding
    # the poisoned text is new, and fails once too, one retry later)
    faulty.update(healed=False, fail_times=1, failed_alone={})
    assert run_cli(corpus, tmp_path / "healed", *fast) == 0
    assert published_files(tmp_path / "healed") == expected
    assert len(faulty["failed_alone"]) >= 2 and set(faulty["failed_alone"].values()) == {1}  # they did fail


def test_a_crash_while_publishing_resumes(tmp_path, monkeypatch):
    config = base_config(tmp_path, dataset=str(faulty_corpus(tmp_path)), publish_shard_rows=2)
    augment(config, progress=False)
    out = Path(config.output)
    expected = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert len(list((out / "data").iterdir())) >= 3
    for p in (out, Path(config.resolved_work_dir())):
        import shutil

        shutil.rmtree(p)

    real = FOLDER_SINK.with_retries
    calls = {"n": 0}

    def dies_on_the_fifth_write(fn, **kw):
        calls["n"] += 1
        if calls["n"] == 5:  # after the manifest claim (2 writes) and two data files
            raise KeyboardInterrupt("killed while publishing")
        return real(fn, **kw)

    monkeypatch.setattr(FOLDER_SINK, "with_retries", dies_on_the_fifth_write)
    with pytest.raises(KeyboardInterrupt):
        augment(config, progress=False)
    monkeypatch.setattr(FOLDER_SINK, "with_retries", real)
    written = sorted((out / "data").iterdir())
    assert 0 < len(written) < len(expected)
    augment(config, progress=False)
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == expected


def test_trust_remote_code_only_when_asked(tmp_path, monkeypatch):
    import transformers

    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    load_engine(TINY_SYNTHESIZER, "hf", batch_size=3)
    load_engine(TINY_SYNTHESIZER, "hf", batch_size=3, trust_remote_code=True)
    assert seen == [False, True]
    assert AugmentConfig().trust_remote_code is False


@settings(max_examples=50, deadline=None)
@given(st.text(), st.lists(st.tuples(st.text(), st.text()), max_size=3))
def test_prompts_hold_their_inputs_and_one_bos_per_example(text, demos):
    demos = [(t, [{"instruction": q, "response": q}]) for t, q in demos]
    prompt = build_prompt(text, demos)
    assert prompt.startswith("<s> <CON> ") and prompt.endswith(f" <CON> {text} </CON>\n\n")
    assert all(t in prompt for t, _ in demos)
    encoder = get_encoder(TINY_SYNTHESIZER)
    ids = encoder.encode_prompt(text, demos)
    assert ids.count(encoder.bos_id) == len(demos) + 1 and ids[0] == encoder.bos_id
    assert ids.count(encoder.eos_id) == len(demos)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1)), min_size=1, max_size=5),
    st.integers(0, 2**31),
)
def test_templify_is_deterministic_under_a_seed(rows, seed):
    batch = {"text": [t for t, _, _ in rows], "pairs": [[{"instruction": q, "response": a}] for _, q, a in rows]}
    first = templify_batch(batch, seed=seed)
    assert templify_batch(batch, seed=seed) == first
    shuffled = list(range(len(rows)))
    random.Random(seed).shuffle(shuffled)
    again = templify_batch({k: [v[i] for i in shuffled] for k, v in batch.items()}, seed=seed)
    assert sorted(again["text"]) == sorted(first["text"])  # a row's rendering does not depend on its batch order
