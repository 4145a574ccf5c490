"""The run layer: no secret in anything a run writes or prints, errors, self-documenting options and the CLI
flags derived from them, the run log."""

import dataclasses
import json
import logging
import typing

import datasets
import pytest
from conftest import tiny_config

from ipt_data import errors
from ipt_data.cli import build_parser, main
from ipt_data.config import SAMPLE_CORPUS, AugmentConfig
from ipt_data.engines import clear_cache, load_engine, register_engine, unregister_engine
from ipt_data.options import OUTPUT, RUN, SHARDS, option, scoped
from ipt_data.redact import REDACTED, collect_secrets, redact, scrub
from ipt_data.testing.fixtures import TINY_SYNTHESIZER

SECRETS = {
    "option": "opt-secret-4a1f9c2e7b",  # engine_options.api_key
    "nested": "nested-secret-88d2e0f1",  # engine_options.auth.password
    "deep": "deep-secret-19bd7c3a55",  # engine_options.auth.more.token
    "hf_env": "hf_envsecret1234567890abcdef",  # HF_TOKEN
    "openai_env": "openai-env-secret-5e6f7a8b",  # OPENAI_API_KEY
}


class Leaky:
    """The hf engine, configured with secrets, which logs every one of them (as a careless engine or library
    might) and can fail with them in its error message."""

    name = "leaky"

    def __init__(self, model, device, api_key, auth, fail=False, **options):
        import os

        if fail:
            raise errors.ConfigError(f"the server refused key {api_key} and password {auth['password']}")
        self.inner = load_engine(model, "hf", device=device, **options)
        self.max_model_len = self.inner.max_model_len
        logging.getLogger("ipt_data.engines.leaky").warning(
            "connecting with %s / %s / %s, env %s %s",
            api_key,
            auth["password"],
            auth["more"]["token"],
            os.environ["HF_TOKEN"],
            os.environ["OPENAI_API_KEY"],
        )

    def generate(self, prompts, **kwargs):
        return self.inner.generate(prompts, **kwargs)


@pytest.fixture()
def leaky(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRETS["hf_env"])
    monkeypatch.setenv("OPENAI_API_KEY", SECRETS["openai_env"])
    register_engine("leaky", Leaky)
    yield {"api_key": SECRETS["option"], "auth": {"password": SECRETS["nested"], "more": {"token": SECRETS["deep"]}}}
    unregister_engine("leaky")
    clear_cache()


def leaked(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_no_secret_in_any_file_a_run_writes_or_in_what_it_prints(tmp_path, capsys, leaky):
    out = tmp_path / "out"
    args = ["augment", "--dataset", SAMPLE_CORPUS, "--model", TINY_SYNTHESIZER, "--engine", "leaky"]
    args += ["--limit", "6", "--max-new-tokens", "40", "--output", str(out), "--no-progress", "--examples", "1"]
    args += ["--publish-rejects"]
    assert main([*args, "--engine-options", json.dumps(leaky)]) == 0
    assert main([*args, "--engine-options", json.dumps({**leaky, "fail": True}), "--output", str(tmp_path / "b")]) == 2
    printed = capsys.readouterr()
    assert "the server refused key <redacted>" in printed.err and not leaked(printed.out + printed.err)
    files = [
        p for folder in (out, tmp_path / "out.work", tmp_path / "b.work") for p in folder.rglob("*") if p.is_file()
    ]
    assert {"README.md", "run_report.json", "rejects.jsonl", "run.json", "run.log"} <= {p.name for p in files}
    for path in files:
        assert not leaked(path.read_bytes().decode("utf-8", "replace")), path
    log = (tmp_path / "out.work" / "run.log").read_text()
    assert "connecting with <redacted> / <redacted> / <redacted>, env <redacted> <redacted>" in log
    card = (out / "README.md").read_text()
    assert "ipt-data augment" in card and "api_key" not in card and "password" not in card


def test_redaction_at_any_depth():
    config = {"a": {"b": [{"api_key": "k1"}, {"headers": {"Authorization": "Bearer abcdef123"}}]}, "max_new_tokens": 5}
    assert redact(config) == {"a": {"b": [{}, {"headers": {}}]}, "max_new_tokens": 5}
    assert collect_secrets({"x": [{"secret": "s3cr3t"}], "hf_token": "hf_x1y2"}) == ["s3cr3t", "hf_x1y2"]
    assert scrub("GET https://user:pa55word@host/x with Bearer tok-123456") == (
        f"GET https://{REDACTED}@host/x with {REDACTED}"
    )
    assert scrub("token hf_abcdefghijklmnopqrstu and sk-abcdefghijklmnop1234") == f"token {REDACTED} and {REDACTED}"
    assert scrub("plain text", ["absent"]) == "plain text"
    assert scrub("s3://b/x.jsonl?X-Amz-Signature=ab12&token=t0k&part=2") == (
        f"s3://b/x.jsonl?X-Amz-Signature={REDACTED}&token={REDACTED}&part=2"
    )


def test_errors_have_one_root_and_the_matching_builtins():
    assert issubclass(errors.ConfigError, errors.IptDataError) and issubclass(errors.ConfigError, ValueError)
    assert issubclass(errors.InputNotFoundError, FileNotFoundError)
    assert issubclass(errors.OutputExistsError, FileExistsError)
    assert issubclass(errors.MissingExtraError, ImportError)
    assert issubclass(errors.ModelUnavailableError, OSError)
    with pytest.raises(errors.ConfigError, match="chain_order"):
        AugmentConfig(chain_order="sideways")


def test_the_cli_prints_our_errors_in_one_line_and_lets_bugs_show(tmp_path, capsys, monkeypatch):
    assert main(["augment", "--dataset", str(tmp_path / "missing.jsonl"), "--model", TINY_SYNTHESIZER]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipt-data: error: ") and err.count("\n") == 1

    def bug(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("ipt_data.run.augment", bug)
    with pytest.raises(KeyError, match="a bug"):  # a traceback, not a polite line
        main(["augment", "--model", TINY_SYNTHESIZER, "--output", str(tmp_path / "o")])


def test_every_option_declares_scope_and_help():
    for f in dataclasses.fields(AugmentConfig):
        assert f.metadata["scope"] in (SHARDS, OUTPUT, RUN) and f.metadata["help"], f.name
    assert {"model", "rounds", "chain_order", "dataset", "fraction", "shard_size"} <= set(scoped(AugmentConfig, SHARDS))
    assert {"engine", "engine_options", "gpus", "executor", "output"} <= set(scoped(AugmentConfig, RUN))

    @dataclasses.dataclass
    class Careless(AugmentConfig):
        forgotten: int = 1

    with pytest.raises(TypeError, match="forgotten"):
        scoped(Careless, SHARDS)

    @dataclasses.dataclass
    class Careful(AugmentConfig):
        new_knob: int = option(1, scope=SHARDS, help="a new knob")

    assert Careful(new_knob=2).fingerprint() != Careful().fingerprint()


def parse_filters(value):
    from ipt_data.quality.pair_filters import parse_filters

    return parse_filters(value)


def _other_value(f: dataclasses.Field, hint):
    """A valid value unlike the default, and how it is typed on the command line."""
    choices = f.metadata.get("choices")
    if choices:
        value = next(c for c in choices if c != f.default)
        return value, value
    special = {
        "engine_options": ({"batch_size": 64}, '{"batch_size": 64}'),
        "general_columns": (("instruction", "output"), "instruction,output"),
        "keep_columns": (("id", "url"), "id,url"),
        "fraction": (0.5, "0.5"),
        "gpus_per_worker": (1.0, "1"),
        "temperature": (0.7, "0.7"),
        "max_model_len": (8192, "8192"),
        "max_new_tokens": (200, "200"),
        "general_ratio": (1.5, "1.5"),
        "max_engine_errors": (0.5, "0.5"),
        "engine_retry_wait": (0.5, "0.5"),
        "engine_retries": (5, "5"),
        "filters": (parse_filters("grounding"), "grounding"),
        "decontaminate": (["quiz.jsonl?name=quiz&split=test"], "quiz.jsonl"),
        "stages": (("route", "chunk", "synthesize", "templify", "count"), "route,chunk,synthesize,templify,count"),
        "stage_options": ({"mine": {"k": 1}}, '{"mine": {"k": 1}}'),
    }
    if f.name in special:
        return special[f.name]
    kind = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if kind[0] is bool:
        return True, None
    if kind[0] is int:
        return 3, "3"
    return f"other-{f.name}", f"other-{f.name}"


@pytest.mark.parametrize("f", dataclasses.fields(AugmentConfig), ids=lambda f: f.name)
def test_every_flag_parses_and_scopes_decide_the_fingerprints(f):
    hint = typing.get_type_hints(AugmentConfig)[f.name]
    value, typed = _other_value(f, hint)
    flag = "--" + f.name.replace("_", "-")
    args = build_parser().parse_args(["augment", flag] + ([typed] if typed is not None else []))
    config = AugmentConfig.from_recipe(None, **{n: getattr(args, n) for n in AugmentConfig.names()})
    assert getattr(config, f.name) == value
    base = AugmentConfig()
    assert (config.fingerprint() != base.fingerprint()) == (f.metadata["scope"] == SHARDS)
    assert (config.output_fingerprint() != base.output_fingerprint()) == (f.metadata["scope"] in (SHARDS, OUTPUT))


def test_help_shows_defaults_choices_and_the_version(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    with pytest.raises(SystemExit):
        main(["augment", "--help"])
    text = capsys.readouterr().out
    assert "default: instruction-pretrain/instruction-synthesizer" in text and "{reference,adjacent}" in text
    assert "--engine-options JSON" in text and "--general-columns A,B" in text
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("ipt-data 0.")


def test_the_run_logs_to_its_work_folder_and_restores_progress_bars(tmp_path):
    from ipt_data.run import augment

    datasets.enable_progress_bars()
    config = tiny_config(limit=4, output=str(tmp_path / "o"))
    augment(config, progress=False)
    assert datasets.is_progress_bar_enabled()
    log = (tmp_path / "o.work" / "run.log").read_text()
    assert "run started" in log and "run finished" in log


def test_a_rerun_removes_what_killed_writers_left(tmp_path):
    import os
    import time

    from ipt_data.run import augment

    config = tiny_config(limit=4, output=str(tmp_path / "o"), overwrite=True)
    augment(config, progress=False)
    shards = tmp_path / "o.work" / "shards"
    old, recent = shards / "00000.parquet.111-222.tmp", shards / "00000.parquet.333-444.tmp"
    for tmp in (old, recent):
        tmp.write_bytes(b"half a parquet file")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    augment(config, progress=False)
    assert not old.exists() and not recent.exists()  # the run holds the work folder's lock: no writer is left
    assert "left by a writer that was stopped mid-write" in (tmp_path / "o.work" / "run.log").read_text()


def test_the_readme_extension_examples_work(tmp_path, monkeypatch, capsys):
    """The README's "Extending" code, run as written: an executor and a sink, through `augment`."""
    import re
    from pathlib import Path

    import ipt_data.run.executors as executors
    import ipt_data.sinks as sinks

    for registry in (executors.EXECUTORS, sinks.SINKS):  # the example registers globally
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"Each extension touches one place:\n\n```python\n(.*?)```", readme, re.S).group(1)
    exec(code, {})
    from ipt_data.run import augment

    out = tmp_path / "out"
    config = tiny_config(
        limit=8, shard_size=4, executor="verbose", output=f"logged://{out}", work_dir=str(tmp_path / "work")
    )
    report = augment(config, progress=False)
    assert report["shards"]["total"] == report["shards"]["added"] == 2 and report["accounted"]
    seconds = report["seconds"]  # the shard phase on the clock, beside its stages summed over shards
    assert 0 < seconds["setup"] + seconds["shards_wall"] <= seconds["total"]
    printed = capsys.readouterr().out
    assert "shard 1 from row 4" in printed and "publishing" in printed and (out / "README.md").exists()


def test_the_readme_stage_example_works_as_written(tmp_path, monkeypatch, capsys):
    """The README's "a stage of your own" module and its use, as written: the stage named in the list rejects
    the short texts, with its reason and its count in the report, stats.json and the card."""
    import json
    import re
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    after = readme.split("in `my_stages/short_texts.py`:", 1)[1]
    module, use = re.findall(r"```python\n(.*?)```", after, re.S)[:2]
    (tmp_path / "my_stages").mkdir()
    (tmp_path / "my_stages" / "short_texts.py").write_text(module)
    (tmp_path / "recipes").symlink_to(root / "recipes")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        exec(use, {})
    finally:
        sys.modules.pop("my_stages.short_texts", None)
        sys.modules.pop("my_stages", None)
    assert capsys.readouterr().out.strip().endswith("1 {'too_short': 1}")
    out = tmp_path / "out" / "short"
    report = json.loads((out / "run_report.json").read_text())
    assert report["short_texts"] == 1 and report["rows"]["rejected"] == 1 and report["accounted"]
    assert json.loads((out / "stats.json").read_text())["synthesis"]["short_texts"] == 1
    assert "| texts too short | 1 |" in (out / "README.md").read_text()
    assert '"reason": "too_short"' in (tmp_path / "out" / "short.work" / "rejects.jsonl").read_text()
