"""English prose for benchmarks, from this Python's own standard library: the docstrings of its modules,
classes and functions (read with `ast`, nothing imported), joined into documents whose lengths in words follow
a log-normal distribution (median about 330 words). Seeded: the same documents on the same Python."""

from __future__ import annotations

import ast
import json
import math
import random
import sysconfig
from pathlib import Path


def docstrings(min_words: int = 12) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        if "test" in str(path.relative_to(root)):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= min_words:
                    found.append(doc)
    return found


def documents(n: int, seed: int = 0, sigma: float = 0.6) -> list[str]:
    """`n` documents of whole docstrings joined by blank lines, each as long as a log-normal draw of words (the
    draw's median, 272, gives documents of median ~330 words once the last docstring is whole)."""
    rng = random.Random(seed)
    pool = docstrings()
    rng.shuffle(pool)
    out, k = [], 0
    for _ in range(n):
        target = max(20, int(math.exp(math.log(272) + sigma * rng.gauss(0, 1))))
        parts, words = [], 0
        while words < target:
            parts.append(pool[k % len(pool)])
            words += len(parts[-1].split())
            k += 1
        out.append("\n\n".join(parts))
    return out


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path
