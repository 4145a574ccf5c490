"""One progress bar over input rows (total and ETA when the row count is known: datasets, local JSON Lines),
updated per synthesized batch, with pairs and generated tokens/s (resumed shards count rows, not tokens)."""

from __future__ import annotations

import time


class Progress:
    def __init__(self, total: int | None, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="rows", desc="augment", disable=not enabled, dynamic_ncols=True)
        self.pairs = self.tokens = self.advanced = 0  # advanced: rows of the current shard already shown
        self.start = time.perf_counter()

    def update_synth(self, part: dict) -> None:
        """Live counts from one synthesized batch; its documents advance the bar."""
        self._count(sum(len(p) for p in part["pairs"]), sum(part["completion_tokens"]))
        docs = len(set(part.get("doc_id", []))) or len(part["pairs"])
        self.advanced += docs
        self.bar.update(docs)

    def add_shard(self, stats: dict, counted_live: bool) -> None:
        """A finished shard: its rows (those not shown batch by batch), and its pairs and tokens unless they
        were counted live."""
        if not counted_live:
            self._count(stats.get("pairs", 0), stats.get("completion_tokens", 0))
        self.bar.update(max(0, stats["rows"]["in"] - self.advanced))
        self.advanced = 0

    def _count(self, pairs: int, tokens: int) -> None:
        self.pairs += pairs
        self.tokens += tokens
        rate = self.tokens / max(1e-9, time.perf_counter() - self.start)
        self.bar.set_postfix(pairs=self.pairs, tok_s=f"{rate:,.0f}")

    def skip_shard(self, stats: dict) -> None:
        """A shard finished by an earlier run: its rows count, its tokens do not enter the rate."""
        self.bar.update(stats["rows"]["in"])

    def close(self) -> None:
        self.bar.close()
