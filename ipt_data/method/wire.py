"""The instruction synthesizer's markup (SPEC 1-2): build prompts, render and parse pairs.

Pure string functions, no model and no tokenizer. `prompt_parts` is what the token encoder
(`ipt_data.method.tokenizer`) consumes: the same prompt split at the places where the markup puts the
BOS/EOS special tokens, so that special-token strings inside a raw text stay plain text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

BOS = "<s>"
EOS = "</s>"
CON_OPEN = " <CON> "
CON_CLOSE = " </CON>"
QUE = "<QUE>"
ANS = "<ANS>"
END = "</END>"
PAIR_SEP = "\n\n"

Pair = Mapping[str, str]
Demo = tuple[str, Sequence[Pair]]


def render_pair(pair: Pair) -> str:
    """One pair as the synthesizer writes it: `<QUE> {instruction} <ANS> {response} </END>`."""
    return f"{QUE} {pair['instruction']} {ANS} {pair['response']} {END}"


def render_pairs(pairs: Iterable[Pair]) -> str:
    """A completion holding `pairs`, separated by a blank line."""
    return PAIR_SEP.join(render_pair(p) for p in pairs)


def context_body(text: str) -> str:
    """The text that follows BOS in a single-text prompt: ` <CON> {text} </CON>\\n\\n`."""
    return CON_OPEN + text + after_text()


def demo_body(text: str, pairs: Sequence[Pair]) -> str:
    """The text between BOS and EOS of an earlier example carried in an M-shot prompt."""
    return CON_OPEN + text + after_text(pairs)


def after_text(pairs: Sequence[Pair] = ()) -> str:
    """What follows the text in its part of a prompt: ` </CON>\\n\\n`, then, in an earlier example, its pairs."""
    return f"{CON_CLOSE}\n\n" + render_pairs(pairs)


def prompt_parts(text: str, demos: Sequence[Demo] = ()) -> list[tuple[str, str]]:
    """The prompt as `("special", "<s>"|"</s>")` and `("text", ...)` parts, in order."""
    parts: list[tuple[str, str]] = []
    for demo_text, demo_pairs in demos:
        parts += [("special", BOS), ("text", demo_body(demo_text, demo_pairs)), ("special", EOS)]
    parts += [("special", BOS), ("text", context_body(text))]
    return parts


def build_prompt(text: str, demos: Sequence[Demo] = ()) -> str:
    """The prompt string for `text`, preceded by earlier `(text, pairs)` examples (SPEC 1-2)."""
    return "".join(value for _, value in prompt_parts(text, demos))


def parse_pairs(completion: str) -> list[dict[str, str]]:
    """Pairs from a completion (SPEC 1). Never raises; invalid pieces are skipped."""
    return parse_completion(completion)[0]


def parse_completion(completion: str) -> tuple[list[dict[str, str]], int]:
    """`(pairs, n_invalid)`: the valid, de-duplicated pairs and how many pieces were rejected.

    A cut-off last piece (no closing `</END>`) and duplicate questions count as invalid.
    """
    if not isinstance(completion, str) or not completion.strip():
        return [], 0
    pieces = completion.split(END)
    last = pieces.pop()  # text after the final </END>: a cut-off pair, or only whitespace
    n_invalid = 1 if last.strip() else 0
    pairs: list[dict[str, str]] = []
    seen: set[str] = set()
    for piece in pieces:
        if piece.count(ANS) != 1:
            n_invalid += 1
            continue
        head, answer = piece.split(ANS)
        head, answer = head.strip(), answer.strip()
        if not head.startswith(QUE) or not answer:
            n_invalid += 1
            continue
        question = head.replace(QUE, "").strip()  # every <QUE>, as the reference does
        key = question.lower()
        if key in seen:
            n_invalid += 1
            continue
        seen.add(key)
        pairs.append({"instruction": question, "response": answer})
    return pairs, n_invalid
