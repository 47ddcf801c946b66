"""Calibration of the active-speaker vote (`lipdub.prep.speaker`: MIN_R, MARGIN, MIN_FRAMES) on the corpus.

A video with two equally prominent faces, one of them talking in its soundtrack, is simulated from pairs of
corpus talking clips: clip A's face and audio (the speaker) and clip B's face (another person, whose lips
move with other speech or not at all), both cut to the shorter clip. Pairs whose audio tracks correlate (the
corpus has several clips driven by one audio) and pairs of one identity label are left out. For every pair
the vote of `speaker.vote` is counted as right (A), wrong (B) or none (prep keeps `multiple_faces`); pairs
shorter than MIN_FRAMES can't be voted on and are counted apart. Rows: speakers of the held-out identities
of split 0 (the student audio model never heard them) and speakers of every identity.

Run: `python -m bench.active_speaker [--corpus ../shared/corpus]` (face mesh of every clip on the first
run, cached with `lipdub train audio`'s under LIPDUB_DATA_DIR/audio_model/corpus; about a minute after).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lipdub.audio.corpus import load_or_extract, talking_clips
from lipdub.audio.splits import held_out_identities
from lipdub.eval.signals import audio_envelope
from lipdub.prep import speaker
from lipdub.prep.tracking import FaceTrack, landmark_box


def face_track(track_id: int, landmarks: np.ndarray, n: int) -> FaceTrack:
    """The clip's face in its first `n` frames, as prep's tracker would hold it."""
    frames = [f for f in range(n) if not np.isnan(landmarks[f, 0, 0])]
    return FaceTrack(track_id, frames, [landmark_box(landmarks[f]) for f in frames], [landmarks[f] for f in frames])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--out", type=Path, default=None, help="also write the counts as JSON")
    args = parser.parse_args()
    if not (args.corpus / "manifest.csv").is_file():
        raise SystemExit(f"no corpus at {args.corpus}: nothing to calibrate on")
    from lipdub.config import get_settings

    cache = get_settings().data_dir / "audio_model" / "corpus"
    clips = talking_clips(args.corpus)
    data = [load_or_extract(c, cache) for c in clips]
    heard = [speaker.speech_opening(d.samples) for d in data]
    envelopes = [audio_envelope(d.samples, d.n_frames) for d in data]
    held = held_out_identities()
    counts = {group: {"right": 0, "wrong": 0, "none": 0, "too_short": 0} for group in ("held_out", "all")}
    for a, (clip_a, data_a) in enumerate(zip(clips, data)):
        for b, (clip_b, data_b) in enumerate(zip(clips, data)):
            if clip_a.identity == clip_b.identity:
                continue
            n = min(data_a.n_frames, data_b.n_frames, len(heard[a]))
            if n > 2 and abs(np.corrcoef(envelopes[a][:n], envelopes[b][:n])[0, 1]) > 0.3:
                continue  # one driving audio behind both clips: not two people
            if n < speaker.MIN_FRAMES:
                outcome = "too_short"
            else:
                faces = [face_track(0, data_a.landmarks, n), face_track(1, data_b.landmarks, n)]
                chosen = speaker.vote(faces, heard[a][:n]).chosen
                outcome = "none" if chosen is None else ("right" if chosen.id == 0 else "wrong")
            for group in ("held_out", "all") if clip_a.identity in held else ("all",):
                counts[group][outcome] += 1
    print(f"MIN_R {speaker.MIN_R}, MARGIN {speaker.MARGIN}, MIN_FRAMES {speaker.MIN_FRAMES}")
    print("| speakers | pairs voted on | right | wrong | no choice | pairs too short |")
    print("|---|---|---|---|---|---|")
    for group, c in counts.items():
        voted = c["right"] + c["wrong"] + c["none"]
        print(f"| {group} | {voted} | {c['right'] / voted:.1%} | {c['wrong'] / voted:.1%} | "
              f"{c['none'] / voted:.1%} | {c['too_short']} |")
    if args.out:
        args.out.write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()
