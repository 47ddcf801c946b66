"""Calibration of `lipdub.prep.shots.OTHER_PERSON_DISTANCE` on the corpus talking clips.

Every clip is cut into 2-s windows; each window gets the neutral face prep computes for a shot
(`stages.prep.neutral_shape`: canonical space, mouth closed), and every pair of windows its
`shots.person_distance`. Pairs of one clip stand for two shots of one person in one video; pairs of clips
with the same identity label for the same person recorded elsewhere; the rest for different people. Prints
the distance quantiles, the AUCs, and what the shipped threshold calls "another person" in each group.

Run: `python -m bench.person_distance [--corpus ../shared/corpus] [--window 50]` (face mesh of every clip on
the first run, cached with `lipdub train audio`'s under LIPDUB_DATA_DIR/audio_model/corpus).
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from lipdub.audio.corpus import load_or_extract, talking_clips
from lipdub.face import landmarks as L
from lipdub.prep.pose import fit_pose
from lipdub.prep.shots import OTHER_PERSON_DISTANCE, person_distance
from lipdub.prep.source import neutral_shape


def window_faces(landmarks: np.ndarray, window: int) -> list[np.ndarray]:
    """The neutral face of each `window`-frame stretch with a face in at least half its frames."""
    present = ~np.isnan(landmarks[:, 0, 0])
    raw = np.where(present[:, None, None], landmarks, 0).astype(np.float32)
    pose = fit_pose(raw, present)
    opening = np.zeros(len(raw), np.float32)
    opening[present] = L.mouth_opening(raw)[present]
    faces = []
    for start in range(0, len(raw) - window + 1, window):
        usable = np.zeros(len(raw), bool)
        usable[start: start + window] = present[start: start + window]
        if usable.sum() >= window // 2:
            faces.append(neutral_shape(raw, pose, opening, usable))
    return faces


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive pair is closer than a negative one): the Mann-Whitney U of the two samples, normalised."""
    return float(mannwhitneyu(negative, positive).statistic / (len(positive) * len(negative)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--window", type=int, default=50, help="frames per window (50 = 2 s)")
    args = parser.parse_args()
    if not (args.corpus / "manifest.csv").is_file():
        raise SystemExit(f"no corpus at {args.corpus}: nothing to calibrate on")
    from lipdub.config import get_settings

    cache = get_settings().data_dir / "audio_model" / "corpus"
    faces, clip, identity = [], [], []
    for c in talking_clips(args.corpus):
        for face in window_faces(load_or_extract(c, cache).landmarks, args.window):
            faces.append(face)
            clip.append(c.name)
            identity.append(c.identity or c.name)
    groups: dict[str, list[float]] = {"same clip": [], "same identity, other clip": [], "different identity": []}
    for i, j in combinations(range(len(faces)), 2):
        d = person_distance(faces[i], faces[j])
        key = ("same clip" if clip[i] == clip[j] else "same identity, other clip" if identity[i] == identity[j]
               else "different identity")
        groups[key].append(d)
    arrays = {k: np.asarray(v) for k, v in groups.items()}
    report = {
        "windows": len(faces), "clips": len(set(clip)), "identities": len(set(identity)),
        "threshold": OTHER_PERSON_DISTANCE,
        "groups": {k: {"pairs": len(v), "p1": round(float(np.percentile(v, 1)), 4),
                       "median": round(float(np.median(v)), 4), "p99": round(float(np.percentile(v, 99)), 4),
                       "called_another_person": round(float((v > OTHER_PERSON_DISTANCE).mean()), 3)}
                   for k, v in arrays.items()},
        "auc_same_clip_vs_different": round(auc(arrays["same clip"], arrays["different identity"]), 3),
        "auc_same_identity_vs_different": round(auc(arrays["same identity, other clip"],
                                                    arrays["different identity"]), 3),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
