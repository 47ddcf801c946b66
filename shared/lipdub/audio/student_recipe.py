"""The choices the shipped student was distilled with: one torch-free place, so `lipdub train audio` and
`bench.eval_audio_splits` take the same defaults without importing the training code to show `--help`."""

from __future__ import annotations

from dataclasses import dataclass

LOOKAHEAD = 4  # video frames (160 ms) of future audio the student hears before it answers, as DH_live


@dataclass(frozen=True)
class StudentRecipe:
    steps: int = 3000  # a step count, not a time budget, so the weights do not depend on the machine's load
    synthetic: int = 500  # espeak-ng utterances added to the distillation data
    augmented: int = 3  # degraded copies of every distillation source
    dropout: float = 0.25  # between the LSTM layers, training only
    spec_masks: int = 2  # SpecAugment time and frequency masks per training window (0 = off)
    lookahead: int = LOOKAHEAD
    # Weight of the loss on each window's mouth-opening correlation with the teacher's; off, it did not
    # help pooled (BENCHMARKS.md).
    opening_corr: float = 0.0
    # fbank rows liftered to this many cepstral coefficients before the network (`features.lifter`); off, it did
    # not help pooled (BENCHMARKS.md).
    cepstra: int = 0
