"""Paired training data for the audio model: the corpus' talking clips → (16-kHz speech, face mesh per 25-fps frame).

Extraction is slow (MediaPipe on every frame), so each clip is cached once as `<cache>/<clip>.npz` under the
data dir (never in git: the footage and anything derived from it stay local, see the corpus README).
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipdub.face.mesh import FaceMesh
from lipdub.media.audio import load_audio
from lipdub.media.video import FrameReader, normalize_video

N_POINTS = 478


@dataclass(frozen=True)
class CorpusClip:
    """One talking clip of ../shared/corpus and where its speech comes from."""

    name: str  # file name in talking/
    video: Path
    audio: Path  # the clip itself, or its paired wav
    identity: str  # the manifest's identity_guess, normalised (look-alike notes stripped)
    language: str
    license: str
    source_repo: str


def identity_key(guess: str) -> str:
    """Group key of a manifest identity: "Obama (per filename)" and "Obama" are one person.

    "looks like same person as X" notes name the other clip's identity: clips so marked join that group.
    """
    text = guess.strip()
    lowered = text.lower()
    marker = "looks like same person as"
    if marker in lowered:
        return lowered.split(marker, 1)[1].strip(" )").split()[0].strip(",;")
    return lowered.split("(")[0].strip()


def talking_clips(corpus: Path) -> list[CorpusClip]:
    clips = []
    with open(corpus / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["folder"] != "talking":
                continue
            video = corpus / "talking" / row["file"]
            # Silent clips come with their paired wav already muxed in talking_muxed/.
            muxed = corpus / "talking_muxed" / f"{Path(row['file']).stem}__muxed.mp4"
            audio = muxed if row["paired_audio"] else video
            clips.append(CorpusClip(row["file"], video, audio, identity_key(row["identity_guess"]),
                                    row["language"], row["license"], row["source_repo"]))
    return clips


@dataclass
class ClipData:
    """A clip's cached pairs: landmarks [T, 478, 3] in pixels (NaN where no face) and speech samples."""

    name: str
    landmarks: np.ndarray
    samples: np.ndarray  # float32 [-1, 1] at 16 kHz; frame t covers samples [640 t, 640 (t+1))

    @property
    def n_frames(self) -> int:
        return len(self.landmarks)


def extract_clip(clip: CorpusClip, max_height: int = 480) -> ClipData:
    """Face mesh on every 25-fps frame (tracking mode), and the clip's speech at 16 kHz."""
    with tempfile.TemporaryDirectory(prefix="lipdub-corpus-") as tmp:
        norm = Path(tmp) / "video.mp4"
        width, height, n = normalize_video(clip.video, norm, max_height=max_height)
        marks = np.full((n, N_POINTS, 3), np.nan, np.float32)
        with FaceMesh(tracking=True) as mesh, FrameReader(norm, width, height, n) as frames:
            for i, frame in enumerate(frames):
                faces = mesh(frame)
                if faces:
                    marks[i] = faces[0]
    return ClipData(clip.name, marks, load_audio(clip.audio))


def cache_path(cache: Path, clip: CorpusClip) -> Path:
    return cache / f"{clip.name}.npz"


def load_or_extract(clip: CorpusClip, cache: Path) -> ClipData:
    path = cache_path(cache, clip)
    if path.is_file():
        with np.load(path) as data:
            return ClipData(clip.name, data["landmarks"], data["samples"].astype(np.float32) / 32768.0)
    data = extract_clip(clip)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, landmarks=data.landmarks,
                        samples=np.clip(data.samples * 32768.0, -32768, 32767).astype(np.int16))
    tmp.replace(path)
    return data
