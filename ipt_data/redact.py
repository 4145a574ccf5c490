"""Keep secrets out of everything a run writes: the dataset card, the run report, the work folder, logs,
and error messages.

A secret is the value of any key, at any depth, whose name has a word meaning a credential (`token`,
`key`, `secret`, `password`, `authorization`, ...: `api_key`, `hf_token`, `headers.Authorization`, but
not `max_new_tokens` or `tokenizer`), and the value of any environment variable so named (`HF_TOKEN`,
`OPENAI_API_KEY`, `AWS_SECRET_ACCESS_KEY`), wherever it appears in a text.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

REDACTED = "<redacted>"
_SECRET_WORDS = {"token", "key", "apikey", "secret", "password", "passwd", "authorization", "auth", "credential"}
_PATTERNS = (  # (pattern, replacement): credentials that announce themselves, whatever they came from
    (re.compile(r"(?i)\bbearer\s+[^\s\"',;]+"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),  # user:password@ in a URL
    (  # a URL query value under a secret-named key: ?token=..., &X-Amz-Signature=..., &api_key=...
        re.compile(r"(?i)([?&][^=&\s]*(?:token|key|secret|signature|password|credential)[^=&\s]*=)[^&\s\"']+"),
        r"\1" + REDACTED,
    ),
)


def is_secret_name(name: str) -> bool:
    """Whether a key or variable name says it holds a credential."""
    words = re.split(r"[_\-\s.]+|(?<=[a-z])(?=[A-Z])", str(name))
    return any(w.lower() in _SECRET_WORDS for w in words)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of secret-named environment variables worth looking for (8+ characters), longest first."""
    env = os.environ if environ is None else environ
    return sorted({v for k, v in env.items() if is_secret_name(k) and len(v) >= 8}, key=len, reverse=True)


def collect_secrets(value: Any) -> list[str]:
    """The values under secret-named keys, at any depth of `value` (a config, engine options)."""
    found: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if is_secret_name(k) and isinstance(v, str) and len(v) >= 4:
                found.append(v)
            else:
                found += collect_secrets(v)
    elif isinstance(value, list | tuple):
        for v in value:
            found += collect_secrets(v)
    return found


def scrub(text: str, extra: tuple[str, ...] | list[str] = ()) -> str:
    """`text` with every known secret value (those of secret-named environment variables, and `extra`) and
    every self-announcing credential replaced by `<redacted>`."""
    for value in sorted({*secret_values(), *extra}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """A copy of `value` (dicts, lists, strings, at any depth) with secret-named entries dropped and
    secret values scrubbed from every string."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not is_secret_name(k)}
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    if isinstance(value, str):
        return scrub(value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets (and the `extra` values, e.g. a run's configured keys) from every
    record's message, arguments merged in, and from its traceback."""

    def __init__(self, extra: tuple[str, ...] | list[str] = ()):
        super().__init__()
        self.extra = tuple(extra)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = scrub(message, self.extra), None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.extra)
        return True
