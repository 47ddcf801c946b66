"""Sample inputs made at run time: a face image from an installed package, given gentle head motion,
and speech synthesised by espeak-ng. Nothing third-party is committed."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from lipdub import FPS
from lipdub.media.video import VideoWriter

DEMO_TEXT = ("Hello! This is lip dub. The mouth in this video now moves with a brand new voice track, "
             "made on a plain computer without a graphics card.")


def speak(text: str, out: Path, voice: str = "en-us", words_per_minute: int = 150) -> Path:
    """Synthesise speech with espeak-ng (a WAV at 22.05 kHz)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (make demo installs it: apt-get install espeak-ng)")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(out), text], check=True)
    return out


def face_image() -> np.ndarray:
    """scikit-image's astronaut portrait (public domain, NASA), RGB 512×512."""
    from skimage import data

    return data.astronaut()


def moving_face_video(out: Path, seconds: float, image: np.ndarray | None = None) -> Path:
    """A talking-head-like clip: the still portrait with slow sway, nod and zoom about the face."""
    image = face_image() if image is None else image
    h, w = image.shape[:2]
    size = (w // 2 * 2, h // 2 * 2)
    centre = (225.0, 125.0) if image.shape[:2] == (512, 512) else (w / 2, h / 2)  # the astronaut's face
    n = max(1, round(seconds * FPS))
    with VideoWriter(out, size[0], size[1], crf=16, tune="none") as writer:
        for i in range(n):
            t = i / FPS
            angle = 2.5 * math.sin(2 * math.pi * t / 4.0)
            scale = 1.0 + 0.03 * math.sin(2 * math.pi * t / 6.0)
            dx, dy = 6 * math.sin(2 * math.pi * t / 5.0), 3 * math.sin(2 * math.pi * t / 3.0)
            m = cv2.getRotationMatrix2D(centre, angle, scale)
            m[:, 2] += (dx, dy)
            writer.write(cv2.warpAffine(image, m, size, flags=cv2.INTER_CUBIC,
                                        borderMode=cv2.BORDER_REPLICATE))
    return out


def make_demo_inputs(folder: Path, seconds: float = 4.0) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    video = moving_face_video(folder / "demo_face.mp4", seconds)
    audio = speak(DEMO_TEXT, folder / "demo_speech.wav")
    return video, audio
