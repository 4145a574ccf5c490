"""How well a tuned synthesizer does on held-out examples: it synthesizes their texts the way `augment` would
(`Synthesizer` with the `hf` engine, greedy), once alone (0-shot) and once in chains of two (with a demo).

- `texts_with_pairs`: share of texts for which it wrote at least one well-formed pair;
- `pairs_per_text`: mean well-formed pairs per text; `parse_failure_rate`: malformed pieces / all pieces;
- `answer_exact_match`, `answer_f1`: each reference pair is matched to the generated pair of that text whose
  question overlaps it most (token F1), and that pair's answer is scored against the reference answer
  (normalised exact match, token F1; 0 when the text got no pair), averaged over reference pairs.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from ipt_data.train.examples import Example

_TOKEN = re.compile(r"\w+")


def _tokens(s: str) -> list[str]:
    return _TOKEN.findall(s.lower())


def token_f1(a: str, b: str) -> float:
    ta, tb = _tokens(a), _tokens(b)
    common = sum((Counter(ta) & Counter(tb)).values())
    if not ta or not tb or not common:
        return float(ta == tb)
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def exact_match(a: str, b: str) -> float:
    return float(_tokens(a) == _tokens(b))


def score(examples: list[Example], generated: list[list[dict]], invalid: list[int]) -> dict[str, float]:
    """The metrics of one pass (see module doc)."""
    n = len(examples)
    valid = sum(len(g) for g in generated)
    em = f1 = 0.0
    refs = 0
    for example, pairs in zip(examples, generated, strict=True):
        for question, answer in example.pairs:
            refs += 1
            if not pairs:
                continue
            best = max(pairs, key=lambda p: token_f1(p["instruction"], question))
            em += exact_match(best["response"], answer)
            f1 += token_f1(best["response"], answer)
    return {
        "texts": n,
        "texts_with_pairs": round(sum(bool(g) for g in generated) / n, 4) if n else 0.0,
        "pairs_per_text": round(valid / n, 3) if n else 0.0,
        "parse_failure_rate": round(sum(invalid) / (valid + sum(invalid)), 4) if valid + sum(invalid) else 0.0,
        "answer_exact_match": round(em / refs, 4) if refs else 0.0,
        "answer_f1": round(f1 / refs, 4) if refs else 0.0,
    }


def evaluate(model_dir: str, examples: list[Example], max_new_tokens: int = 400) -> dict[str, Any]:
    """`{"zero_shot": metrics, "with_demos": metrics}` of the model in `model_dir` on `examples`."""
    from ipt_data.engines import clear_cache
    from ipt_data.stages.synthesize import Synthesizer

    if not examples:
        return {}
    texts = [e.text for e in examples]
    out = {}
    for name, rounds in (("zero_shot", 1), ("with_demos", 2)):
        synth = Synthesizer(model=model_dir, rounds=rounds, max_new_tokens=max_new_tokens, engine="hf")
        rows = synth({"text": texts})
        out[name] = score(examples, rows["pairs"], rows["invalid_pairs"])
    clear_cache()  # the next evaluation may read a new model from the same folder
    return out
