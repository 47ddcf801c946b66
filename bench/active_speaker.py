"""Calibration of the active-speaker vote (`lipdub.prep.speaker`: MIN_R, MARGIN, MIN_FRAMES) on the corpus.

A video with two equally prominent faces, one of them talking in its soundtrack, is simulated from pairs of
corpus talking clips: clip A's face and audio (the speaker) and clip B's face (another person, whose lips
move with other speech or not at all), both cut to the shorter clip. Pairs whose audio tracks correlate (the
corpus has several clips driven by one audio) and pairs of one identity label are left out. For every pair
the vote of `speaker.vote` is counted as right (A), wrong (B) or none (prep keeps `multiple_faces`); pairs
shorter than MIN_FRAMES can't be voted on and are counted apart. Rows: speakers of the held-out identities
of split 0 (the student audio model never heard them) and speakers of every identity. With the speaker
chosen, `another speaks` counts the pairs where `speaker.turns` still finds a window B leads (a spurious
`other_speaker` span in the report).

Dialogues are simulated from the same pairs at least 2 × TURN_FRAMES long: A's audio for the first half,
B's for the second (each face's lips keep moving with its own, muted, speech in the other half, as a
restless listener's would). The right outcome is no choice with both faces found taking turns (prep's
`multiple_faces`, naming the turns); `one face chosen` would dub the other's lines onto it.

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
    groups = ("held_out", "all")
    counts = {g: {"right": 0, "wrong": 0, "none": 0, "too_short": 0, "another_speaks": 0} for g in groups}
    dialogues = {g: {"turns": 0, "one_face": 0, "none": 0} for g in groups}
    for a, (clip_a, data_a) in enumerate(zip(clips, data)):
        for b, (clip_b, data_b) in enumerate(zip(clips, data)):
            if clip_a.identity == clip_b.identity:
                continue
            n = min(data_a.n_frames, data_b.n_frames, len(heard[a]), len(heard[b]))
            if n > 2 and abs(np.corrcoef(envelopes[a][:n], envelopes[b][:n])[0, 1]) > 0.3:
                continue  # one driving audio behind both clips: not two people
            in_groups = groups if clip_a.identity in held else ("all",)
            faces = [face_track(0, data_a.landmarks, n), face_track(1, data_b.landmarks, n)]
            if n < speaker.MIN_FRAMES:
                outcome = "too_short"
            else:
                vote = speaker.vote(faces, heard[a][:n])
                outcome = "none" if vote.chosen is None else ("right" if vote.chosen.id == 0 else "wrong")
                if outcome == "right" and any(t.face == 1 for t in vote.turns):
                    for g in in_groups:
                        counts[g]["another_speaks"] += 1
            for g in in_groups:
                counts[g][outcome] += 1
            if n >= 2 * speaker.TURN_FRAMES:
                half = n // 2
                vote = speaker.vote(faces, np.concatenate([heard[a][:half], heard[b][half:n]]))
                said = "turns" if vote.dialogue else ("none" if vote.chosen is None else "one_face")
                for g in in_groups:
                    dialogues[g][said] += 1
    print(f"MIN_R {speaker.MIN_R}, MARGIN {speaker.MARGIN}, MIN_FRAMES {speaker.MIN_FRAMES}, "
          f"TURN_FRAMES {speaker.TURN_FRAMES}, TURN_R {speaker.TURN_R}")
    print("| speakers | pairs voted on | right | wrong | no choice | pairs too short | right, another speaks |")
    print("|---|---|---|---|---|---|---|")
    for group, c in counts.items():
        voted = c["right"] + c["wrong"] + c["none"]
        print(f"| {group} | {voted} | {c['right'] / voted:.1%} | {c['wrong'] / voted:.1%} | "
              f"{c['none'] / voted:.1%} | {c['too_short']} | {c['another_speaks'] / voted:.1%} |")
    print("\n| dialogue's first speaker | dialogues | turns found (multiple_faces) | one face chosen | no choice, no turns |")
    print("|---|---|---|---|---|")
    for group, d in dialogues.items():
        total = sum(d.values())
        print(f"| {group} | {total} | {d['turns'] / total:.1%} | {d['one_face'] / total:.1%} | "
              f"{d['none'] / total:.1%} |")
    if args.out:
        args.out.write_text(json.dumps({"pairs": counts, "dialogues": dialogues}, indent=1) + "\n")


if __name__ == "__main__":
    main()
