"""Print one rendered pre-training text per layout (Classic, Dialog, Numbered) from real fixture output.

python scripts/readme_examples.py   # the examples shown in README.md
"""

from __future__ import annotations

from datasets import Dataset

from ipt_data import synthesis_features, synthesize_batch, templify_batch, templify_features
from ipt_data.testing.fixtures import TINY_SYNTHESIZER, synthetic_texts


def main() -> None:
    ds = Dataset.from_dict({"text": synthetic_texts(1500, seed=77)})
    ds = ds.map(
        synthesize_batch,
        batched=True,
        batch_size=500,
        features=synthesis_features(ds.features),
        fn_kwargs={"model": TINY_SYNTHESIZER, "rounds": 1, "max_new_tokens": 200},
    )
    pt = ds.map(
        templify_batch,
        batched=True,
        remove_columns=ds.column_names,
        features=templify_features(),
        fn_kwargs={"seed": 0},
    )
    for layout in ("classic", "dialog", "numbered"):
        row = next(
            r
            for r in pt
            if r["layout"] == layout
            and not r["inverted"]
            and r["n_pairs"] >= 3
            and not r["fallback_pairs"]
            and len({p["task"] for p in r["pairs"]}) >= 3  # show a few kinds of task
        )
        tasks = ", ".join(p["task"] for p in row["pairs"])
        print(f"#### {layout} ({tasks})\n\n```text\n{row['text']}\n```\n")


if __name__ == "__main__":
    main()
