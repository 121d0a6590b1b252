"""Splitting one experiment's cases across jobs: `shard=i/n` keeps the i-th of n shares.

Every job computes the same split from the case list alone, so jobs need not talk to each
other. A case costs a fixed part (compiling, the correctness trials, warm-up: about the same
for every case) plus a part that grows with its FLOPs; we take the fixed part to equal the
largest case's FLOPs part. Cases go, largest first, to the shard with the least cost so far
(greedy longest-processing-time). A case and all its backends stay in one shard.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from repro.results.store import case_key

SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(value) -> Optional[tuple[int, int]]:
    """None, or (index, count) from "i/n" with 0 <= i < n. Raises ValueError with the rule."""
    if value is None:
        return None
    m = SHARD.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"shard={value!r}: give i/n with 0 <= i < n, e.g. shard=0/2 (sweep: -m shard=0/2,1/2)")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"shard={value!r}: need 0 <= i < n and n >= 1, e.g. shard=0/2 or shard=1/2")
    return index, count


def shard_label(shard: Optional[tuple[int, int]]) -> str:
    return "all" if shard is None else f"{shard[0]}of{shard[1]}"


def select(cases: list[dict], shard: Optional[tuple[int, int]], cost: Callable[[dict], float]) -> list[dict]:
    """The cases of one shard, in their original order."""
    if shard is None or shard[1] == 1 or not cases:
        return list(cases)
    index, count = shard
    biggest = max(cost(c) for c in cases) or 1.0
    weight = [1.0 + cost(c) / biggest for c in cases]
    load, owner = [0.0] * count, {}
    for i in sorted(range(len(cases)), key=lambda i: (-weight[i], case_key(cases[i]))):
        target = min(range(count), key=lambda s: (load[s], s))
        load[target] += weight[i]
        owner[i] = target
    return [c for i, c in enumerate(cases) if owner[i] == index]
