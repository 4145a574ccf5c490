"""One progress bar over input rows, with pairs and generated tokens/s."""

from __future__ import annotations

import time


class Progress:
    def __init__(self, total: int | None, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="rows", desc="augment", disable=not enabled, dynamic_ncols=True)
        self.pairs = self.tokens = 0
        self.start = time.perf_counter()

    def update_synth(self, part: dict) -> None:
        """Live counts from one synthesized batch."""
        self._count(sum(len(p) for p in part["pairs"]), sum(part["completion_tokens"]))

    def add_shard(self, stats: dict, counted_live: bool) -> None:
        """A finished shard: its rows, and its pairs and tokens unless they were counted live."""
        if not counted_live:
            self._count(stats.get("pairs", 0), stats.get("completion_tokens", 0))
        self.bar.update(stats["rows"]["in"])

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
