"""Figures of a corpus's statistics (`ipt_data.stats`): one message per figure, as PNG bytes.

`figures(stats)` returns `Figure`s: a file name under `images/`, a title, a one-line reading of what it shows
(written from the numbers, for the dataset card) and the PNG. 800 x 400 pixels, the width of a card on the
Hub; no global matplotlib state is touched (a `Figure` with its own Agg canvas), and the bytes depend only
on the numbers (no timestamp in the file).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

SIZE, DPI = (8, 4), 100
COLOR = "#3b6ea8"
KIND_COLORS = {"augmented": "#3b6ea8", "raw": "#9aa5b1", "general": "#d08c3f"}


@dataclass(frozen=True)
class Figure:
    name: str  # images/<name>
    title: str
    reading: str
    png: bytes


def _pct(part: float, whole: float) -> float:
    return 100 * part / whole if whole else 0.0


def _ranked(counts: dict[str, int]) -> tuple[list[str], list[float]]:
    """The keys of `counts`, most frequent first (ties by name), and each one's share in percent."""
    total = sum(counts.values())
    order = sorted(counts, key=lambda k: (-counts[k], k))
    return order, [_pct(counts[k], total) for k in order]


# The axes' place in the figure (fractions of it), for a figure whose tick labels are short: room for the
# title above, the axis labels and tick labels below and left. A figure with long labels on its y axis (the
# horizontal bars) moves its left edge by their measured width (`_left_for`). Set directly, not by
# `tight_layout`, which measures every text of the figure by drawing it once more (a third of its cost).
MARGINS = {"left": 0.085, "right": 0.98, "bottom": 0.14, "top": 0.9}


def _png(draw, **margins: float) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(**{**MARGINS, **margins})
    ax = fig.add_subplot()
    draw(ax)
    ax.spines[["top", "right"]].set_visible(False)
    out = io.BytesIO()
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _left_for(labels: list[str], fontsize: float = 8) -> float:
    """The axes' left edge (a fraction of the figure's width) that leaves room for `labels` as y tick labels."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    font, measure = FontProperties(size=fontsize), TextToPath()
    widest = max((measure.get_text_width_height_descent(s, font, ismath=False)[0] for s in labels), default=0.0)
    return min(0.6, (widest / 72 + 0.2) / SIZE[0])  # points to inches, plus the ticks and their padding


def _bars(ax, labels, values, *, xlabel, ylabel, title, horizontal=False) -> None:
    if horizontal:
        ax.barh(range(len(values)), values, color=COLOR)
        ax.set_yticks(range(len(values)), labels, fontsize=8)
        ax.invert_yaxis()
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.1f}%", va="center", fontsize=7)
    else:
        ax.bar(range(len(values)), values, color=COLOR)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)


def pairs_per_text(s: dict[str, Any]) -> Figure | None:
    counts = s["pairs_per_text"]
    total = sum(counts.values())
    if not total:
        return None
    labels = list(counts)
    shares = [_pct(n, total) for n in counts.values()]
    mode = labels[shares.index(max(shares))]
    title = "Pairs per augmented text"
    reading = (
        f"Augmented texts carry {s['mean_pairs_per_text']:.2f} instruction-response pairs on average; "
        f"{mode} is the most common count ({max(shares):.0f}% of texts)."
    )
    png = _png(
        lambda ax: _bars(ax, labels, shares, xlabel="pairs in the text", ylabel="% of augmented texts", title=title)
    )
    return Figure("pairs_per_text.png", title, reading, png)


def tasks(s: dict[str, Any]) -> Figure | None:
    counts = s["tasks"]
    total = sum(counts.values())
    if not total:
        return None
    order, shares = _ranked(counts)
    families = s["task_families"]
    top = max(families, key=families.get)
    inverse = _pct(sum(n for t, n in counts.items() if t.endswith("_inverse")), total)
    title = "Which tasks the pairs were rendered as"
    reading = (
        f"The most common task is {order[0].replace('_', ' ')} ({shares[0]:.0f}% of pairs); the largest family is "
        f"{top.replace('_', ' ')} ({_pct(families[top], total):.0f}%, all its tasks together); "
        f"{inverse:.0f}% of pairs are inverse tasks (the answer given, the question asked for)."
    )
    labels = [t.replace("_", " ") for t in order]
    png = _png(
        lambda ax: _bars(ax, labels, shares, xlabel="% of pairs", ylabel="", title=title, horizontal=True),
        left=_left_for(labels),
        right=0.93,  # the share written after the longest bar
    )
    return Figure("tasks.png", title, reading, png)


def layouts(s: dict[str, Any]) -> Figure | None:
    counts = s["layouts"]
    total = sum(counts.values())
    if not total:
        return None
    order, shares = _ranked(counts)
    title = "Template layouts"
    reading = (
        f"{order[0].replace('_', ' ').capitalize()} is the layout of {shares[0]:.0f}% of augmented texts; "
        f"{_pct(s['inverted'], total):.1f}% put their tasks before the text."
    )
    labels = [k.replace("_", " ") for k in order]
    png = _png(lambda ax: _bars(ax, labels, shares, xlabel="layout", ylabel="% of augmented texts", title=title))
    return Figure("layouts.png", title, reading, png)


def lengths(s: dict[str, Any]) -> Figure | None:
    by_kind = s["length_tokens"]
    if not by_kind:
        return None
    labels = list(next(iter(by_kind.values()))["bins"])
    title = "Text length by kind"

    def draw(ax) -> None:
        width = 0.8 / len(by_kind)
        for j, (kind, d) in enumerate(by_kind.items()):
            total = sum(d["bins"].values())
            values = [_pct(n, total) for n in d["bins"].values()]
            xs = [i + (j - (len(by_kind) - 1) / 2) * width for i in range(len(values))]
            ax.bar(xs, values, width=width, label=kind, color=KIND_COLORS.get(kind, COLOR))
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=30)
        ax.set_xlabel("length in tokens (n_tokens)")
        ax.set_ylabel("% of rows of that kind")
        ax.set_title(title, fontsize=11)
        ax.legend(frameon=False, fontsize=8)

    means = ", ".join(f"{kind} {d['mean']:,.0f}" for kind, d in by_kind.items())
    reading = f"Mean length in tokens: {means}."
    return Figure("lengths.png", title, reading, _png(draw, bottom=0.19))  # tick labels at an angle


def openings(s: dict[str, Any]) -> Figure | None:
    top = s["diversity"]["top_openings"]
    if not top:
        return None
    labels = [f'"{text}"' for text, _, _ in top]
    shares = [100 * share for _, _, share in top]
    title = f"The {len(top)} most common question openings"
    d = s["diversity"]
    reading = (
        f'The most common opening, "{top[0][0]}", starts {shares[0]:.1f}% of questions; '
        f"{100 * d['distinct_question_share']:.0f}% of questions are distinct and "
        f"{100 * d['copied_answer_share']:.0f}% of answers are copied word for word from their text."
    )
    png = _png(
        lambda ax: _bars(ax, labels, shares, xlabel="% of questions", ylabel="", title=title, horizontal=True),
        left=_left_for(labels),
        right=0.93,
    )
    return Figure("question_openings.png", title, reading, png)


def synthesis(s: dict[str, Any]) -> Figure | None:
    status = s["synthesis"].get("status")
    total = sum(status.values()) if status else 0
    if not total:
        return None
    order, shares = _ranked(status)
    title = "What the synthesizer returned, per chunk"
    ok = _pct(status.get("ok", 0), total)
    reading = (
        f"{ok:.0f}% of synthesized chunks got at least one pair; "
        f"{100 * s['synthesis']['invalid_pair_rate']:.1f}% of the pairs written were malformed and dropped, "
        f"{100 * s['synthesis']['fallback_pair_rate']:.1f}% were rendered verbatim."
    )
    labels = [k.replace("_", " ") for k in order]
    png = _png(lambda ax: _bars(ax, labels, shares, xlabel="status", ylabel="% of chunks", title=title))
    return Figure("synthesis.png", title, reading, png)


def figures(s: dict[str, Any]) -> list[Figure]:
    """Every figure the statistics support (a corpus without augmented texts has fewer)."""
    made = (f(s) for f in (pairs_per_text, tasks, layouts, lengths, openings, synthesis))
    return [f for f in made if f is not None]
