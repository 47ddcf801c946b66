"""Identity splits of the corpus' talking clips: the fixed held-out set and extra random splits for pooled medians."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from lipdub.audio.corpus import CorpusClip, identity_key


def held_out_identities() -> set[str]:
    """Split 0: the project's fixed evaluation identities (lipdub/eval/eval_clips.json)."""
    data = json.loads(resources.files("lipdub.eval").joinpath("eval_clips.json").read_text())
    return {identity_key(i) for i in data["exclude_identities"]}


@dataclass(frozen=True)
class Split:
    name: str
    held_out: frozenset[str]  # identity keys

    def is_test(self, clip: CorpusClip) -> bool:
        return clip.identity in self.held_out


def identity_splits(clips: list[CorpusClip], n_random: int = 4, n_held: int = 10, seed: int = 0) -> list[Split]:
    """Split 0 plus `n_random` random splits holding out `n_held` identities each (all their clips)."""
    splits = [Split("split0", frozenset(held_out_identities()))]
    identities = sorted({c.identity for c in clips})
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        splits.append(Split(f"random{i + 1}", frozenset(rng.choice(identities, n_held, replace=False).tolist())))
    return splits
