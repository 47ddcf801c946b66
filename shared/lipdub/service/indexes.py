"""What the Redis stores share: the time their records and indexes are stamped with, newest-first pages of
a sorted-set index, and the due members of one scored by a deadline (retention, the outbox)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import NamedTuple

import redis


def now() -> float:
    return round(time.time(), 3)


class Cursor(NamedTuple):
    """Where a page of a newest-first listing ended: the last item's creation time and id (ties in time are
    common: a batch creates its jobs within the same millisecond)."""

    score: float
    id: str

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """`{created_at}:{id}` as a page returned it; ValueError for anything else."""
        score, sep, item_id = text.partition(":")
        value = float(score.strip())
        if not (sep and item_id and math.isfinite(value)):
            raise ValueError(f"malformed cursor {text!r}")
        return cls(value, item_id)

    def __str__(self) -> str:
        return f"{self.score!r}:{self.id}"


def newest_first(r: redis.Redis, index: str, after: Cursor | None = None, top: float | str = "+inf",
                 bottom: float | str = "-inf", chunk: int = 50) -> Iterator[str]:
    """The ids of a sorted-set index by descending score, and within a score by descending id (Redis's
    order), starting just after `after`."""
    if after is not None:
        top = after.score
    offset = 0
    while True:
        found = r.zrevrangebyscore(index, top, bottom, start=offset, num=chunk, withscores=True)
        if not found:
            return
        offset += len(found)
        for item_id, score in found:
            if after is not None and score == after.score and item_id >= after.id:
                continue  # the previous page's, up to its last item
            yield item_id


def pair(a: str, b: str) -> str:
    """A member of a due-index (`due`): `{a}:{b}`, `a` free of ':'."""
    return f"{a}:{b}"


def due(r: redis.Redis, index: str, before: float, limit: int) -> list[tuple[str, str]]:
    """Members `{a}:{b}` (pair) of a sorted set scored up to `before`, oldest first, as (a, b)."""
    found = r.zrangebyscore(index, "-inf", before, start=0, num=limit)
    return [(a, b) for a, _, b in (member.partition(":") for member in found)]
