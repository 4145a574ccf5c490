"""One progress bar over input rows (total and ETA when the row count is known: datasets, local JSON Lines),
updated per synthesized batch, with pairs and generated tokens/s (resumed shards count rows, not tokens), and
the counts the acting stages declare for it (`Stat.progress`: pairs dropped, benchmark matches), per shard.
Shards may be synthesized at the same time, in threads: the counts are kept per shard, under a lock."""

from __future__ import annotations

import threading
import time
from collections import Counter


class Progress:
    def __init__(self, total: int | None, enabled: bool, stats: tuple = ()):
        from tqdm.auto import tqdm

        self.stats = [s for s in stats if s.progress]  # `ipt_data.stages.Stat`s shown on the bar
        self.stage_counts: Counter = Counter()
        self.bar = tqdm(total=total, unit="rows", desc="augment", disable=not enabled, dynamic_ncols=True)
        self.pairs = self.tokens = 0
        self.advanced: Counter = Counter()  # shard -> its rows already shown batch by batch
        self.start = time.perf_counter()
        self.lock = threading.Lock()

    def update_synth(self, part: dict, shard: int = 0) -> None:
        """Live counts from one synthesized batch of `shard`; its documents advance the bar."""
        docs = len(set(part.get("doc_id", []))) or len(part["pairs"])
        with self.lock:
            self._count(sum(len(p) for p in part["pairs"]), sum(part["completion_tokens"]))
            self.advanced[shard] += docs
            self.bar.update(docs)

    def add_shard(self, stats: dict, counted_live: bool, shard: int = 0) -> None:
        """A finished shard: its rows (those not shown batch by batch), and its pairs and tokens unless they
        were counted live."""
        with self.lock:
            for stat in self.stats:
                self.stage_counts[stat.progress] += stat.total(stats)
            if not counted_live:
                self._count(stats.get("pairs", 0), stats.get("completion_tokens", 0))
            elif self.stats:
                self._count(0, 0)  # the pairs and tokens were counted live: the stages' counts shown
            self.bar.update(max(0, stats["rows"]["in"] - self.advanced.pop(shard, 0)))

    def _count(self, pairs: int, tokens: int) -> None:
        self.pairs += pairs
        self.tokens += tokens
        rate = self.tokens / max(1e-9, time.perf_counter() - self.start)
        self.bar.set_postfix(pairs=self.pairs, tok_s=f"{rate:,.0f}", **self.stage_counts)

    def skip_shard(self, stats: dict) -> None:
        """A shard finished by an earlier run: its rows count, its tokens do not enter the rate."""
        with self.lock:
            self.bar.update(stats["rows"]["in"])

    def close(self) -> None:
        self.bar.close()
