"""Build the canonical mean face (`canonical_face.npy`) from our own face-mesh measurements.

The file is generated, never copied: we run MediaPipe's face mesh on frames of the frontal clips of a
corpus, remove each frame's pose (generalized Procrustes on the rigid points) and average. Regenerate
with `python -m lipdub.prep.canonical /path/to/corpus` (about a minute on 2 cores).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from lipdub.errors import ErrorCode
from lipdub.face.mesh import FaceMesh
from lipdub.media.ffmpeg import run_ffmpeg
from lipdub.media.probe import probe
from lipdub.prep.pose import CANONICAL_FILE, generalized_procrustes


def sample_frames(video: Path, count: int, size: int = 512) -> list[np.ndarray]:
    """`count` RGB frames spread over the clip (scaled to fit `size`)."""
    info = probe(video)
    assert info.video is not None
    duration = max(info.video.duration, info.duration, 0.1)
    w, h = info.video.width, info.video.height
    k = min(1.0, size / max(w, h))
    sw, sh = int(w * k) // 2 * 2, int(h * k) // 2 * 2
    frames = []
    for i in range(count):
        t = duration * (i + 0.5) / count
        raw = run_ffmpeg(["-ss", f"{t:.3f}", "-i", str(video), "-frames:v", "1", "-vf", f"scale={sw}:{sh}",
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"], code=ErrorCode.input_unreadable,
                         what=f"{video.name}: ffmpeg could not decode a frame").stdout
        if len(raw) == sw * sh * 3:
            frames.append(np.frombuffer(raw, np.uint8).reshape(sh, sw, 3))
    return frames


def corpus_shapes(corpus: Path, frames_per_clip: int = 12, max_yaw: float = 12.0) -> np.ndarray:
    """Face meshes [M, 478, 3] from the near-frontal face clips of the corpus manifest, one identity each."""
    seen: set[str] = set()
    shapes = []
    with open(corpus / "manifest.csv", newline="") as f, FaceMesh(tracking=False) as mesh:
        for row in csv.DictReader(f):
            if row["kind"] not in ("talking_video", "silent_face_video") or row["frontal"] != "True":
                continue
            if abs(float(row["yaw_deg"] or 99)) > max_yaw or row["identity_guess"] in seen:
                continue
            seen.add(row["identity_guess"])
            for frame in sample_frames(corpus / row["folder"] / row["file"], frames_per_clip):
                faces = mesh(frame)
                if faces:
                    shapes.append(faces[0])
    return np.stack(shapes)


def main(corpus: Path, out: Path = CANONICAL_FILE) -> None:
    shapes = corpus_shapes(corpus)
    mean = generalized_procrustes(shapes)
    np.save(out, mean.astype(np.float32))
    print(f"{out}: mean of {len(shapes)} frames")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
