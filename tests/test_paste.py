"""Paste-back: only the mouth region changes, and a colour-cast generator leaves no seam."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lipdub.face import landmarks as L
from lipdub.render import paste, prompt, window
from lipdub.render.dinet import blend_mask

SIZE = 96


@pytest.fixture(scope="module")
def face_frame(demo_inputs: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    """A generated frame (the demo's astronaut clip) and its face mesh."""
    from lipdub.face.mesh import FaceMesh
    from lipdub.media.video import FrameReader, normalize_video

    video = demo_inputs[0]
    norm = video.parent / "paste_norm.mp4"
    w, h, n = normalize_video(video, norm)
    with FrameReader(norm, w, h, n) as reader, FaceMesh(tracking=False) as mesh:
        frame = reader[n // 2]
        faces = mesh(frame)
    assert faces, "the demo frame must have a face"
    return frame, faces[0]


def _paste(frame: np.ndarray, points: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Paste a generated window the way DinetRenderer does, for the frame's own mouth shape."""
    a = window.window_affine(points, SIZE)
    wp = window.apply(a, points[:, :2])
    hard = prompt.mouth_mask(wp, SIZE)
    blend = blend_mask(torch.from_numpy(hard)[None, None])[0, 0].numpy()
    box = paste.window_box(a, SIZE, frame.shape)
    x0, y0, x1, y1 = box
    a_box = a.copy()
    a_box[:, 2] += a[:, :2] @ np.array([x0, y0], np.float32)
    face = paste.lower_face_mask(points, box, 0.08 * float(np.ptp(points[L.FACE_OVAL, 1])))
    region = frame[y0:y1, x0:x1].astype(np.float32)
    window_rgb = window.crop(frame, a, SIZE).astype(np.float32)
    new = paste.paste_mouth(region, generated, blend, hard, window_rgb, a_box, face)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(new + 0.5, 0, 255).astype(np.uint8)
    return out, box, paste.window_to_box(blend, a_box, (0, 0, x1 - x0, y1 - y0))


def test_paste_changes_only_the_mouth_region(face_frame: tuple[np.ndarray, np.ndarray]) -> None:
    frame, points = face_frame
    rng = np.random.default_rng(0)
    generated = rng.uniform(0, 255, (SIZE, SIZE, 3)).astype(np.float32)  # a wildly wrong generator
    out, (x0, y0, x1, y1), soft = _paste(frame, points, generated)
    changed = np.abs(out.astype(int) - frame.astype(int)).max(axis=2) > 0
    assert changed.any()
    # Every changed pixel lies inside the box, where the mouth blend mask (grown by the paste-back's
    # smoothing kernel, 2 px) is non-zero, and below the tip of the nose.
    assert not changed[:y0].any() and not changed[y1:].any()
    assert not changed[:, :x0].any() and not changed[:, x1:].any()
    region_changed = changed[y0:y1, x0:x1]
    grown = soft > 0
    for _ in range(3):
        grown = grown | np.roll(grown, 1, 0) | np.roll(grown, -1, 0) | np.roll(grown, 1, 1) | np.roll(grown, -1, 1)
    assert not (region_changed & ~grown).any()
    ys, _ = np.nonzero(changed)
    assert ys.min() >= points[L.NOSE_TIP, 1]  # the feathered edge may reach just above the sub-nasal point
    # Eyes and everything outside the mouth window are bit-identical.
    for i in L.EYE_CORNERS:
        x, y = points[i, :2].astype(int)
        assert not changed[y - 3:y + 4, x - 3:x + 4].any()


def test_colour_cast_generator_leaves_no_seam(face_frame: tuple[np.ndarray, np.ndarray]) -> None:
    """A generator that draws the right mouth with a colour cast (other lighting in the references) is
    corrected by the colour match: no visible patch, where pasting it raw would leave a 30-level box."""
    frame, points = face_frame
    a = window.window_affine(points, SIZE)
    truth = window.crop(frame, a, SIZE).astype(np.float32)
    cast = np.clip(truth * np.array([1.12, 0.95, 0.9], np.float32) + np.array([25, -10, 12], np.float32), 0, 255)
    out, (x0, y0, x1, y1), soft = _paste(frame, points, cast)
    diff = np.abs(out.astype(float) - frame.astype(float))[y0:y1, x0:x1]
    inside = soft > 0.5
    # Resampling 96 px up to the face size blurs a little; the cast (≈25 levels) must be gone.
    assert diff[inside].mean() < 6.0, diff[inside].mean()
    from lipdub.eval.image import seam_score

    colour, _, _ = seam_score(out, frame, points)
    assert colour < 1.0
    # The same generator without colour matching: the test above would fail (the check can fail).
    raw = np.abs(cast - truth).mean()
    assert raw > 15
