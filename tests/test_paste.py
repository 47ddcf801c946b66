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


def test_colour_match_moves_the_light_and_keeps_the_lips_distance_from_the_skin() -> None:
    """The generated window's skin (the ring) takes the real skin's mean; its lips keep their own distance
    from that skin. A match that also scaled by the ring's spread made a flat generated skin's lips too
    saturated (the lip-chroma gain of issue 32)."""
    rng = np.random.default_rng(1)
    ring = np.zeros((32, 32), np.float32)
    ring[:, :8] = 1.0
    real = np.empty((32, 32, 3), np.float32)
    real[:] = (200.0, 150.0, 130.0)
    real[:, :8] += rng.normal(0.0, 12.0, (32, 8, 3))  # real skin: textured
    generated = np.empty_like(real)
    generated[:] = (180.0, 140.0, 125.0)  # darker, flat skin
    generated[:, 16:] = (150.0, 80.0, 90.0)  # lips
    out = paste.match_colour(generated, real, ring)
    skin_real = real[:, :8].reshape(-1, 3).mean(0)
    assert np.allclose(out[:, :8].reshape(-1, 3).mean(0), skin_real, atol=1e-3)
    assert np.allclose(out[0, 20] - out[0, 0], generated[0, 20] - generated[0, 0], atol=1e-3)


def test_drawn_lips_take_the_frame_own_lip_colour() -> None:
    """Lips drawn paler and pinker than the person's (the generator's habit, issue 32) get the input frame's
    own mean lip colour back; the skin beyond the feathered lip edge is left as it is."""
    def ellipse(n: int, rx: float, ry: float) -> np.ndarray:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([32 + rx * np.cos(t), 32 + ry * np.sin(t)], 1)

    points = np.zeros((478, 2), np.float32)
    points[L.LIPS_OUTER] = ellipse(len(L.LIPS_OUTER), 20, 9)
    points[L.LIPS_INNER] = ellipse(len(L.LIPS_INNER), 12, 1.5)
    box = (0, 0, 64, 64)
    band = paste.lip_band(points, box, 0.0)
    own = np.full((64, 64, 3), (205, 160, 140), np.uint8)
    own[band > 0] = (150, 70, 80)
    drawn = own.copy()
    drawn[band > 0] = (200, 120, 140)
    want = paste.lip_lab(own, paste.lip_band(points, box, -paste.LIP_ERODE))
    assert want is not None
    before = paste.lip_lab(drawn, paste.lip_band(points, box, -paste.LIP_ERODE))
    assert before is not None and np.linalg.norm(before - want) > 10
    paste.keep_lip_colour(drawn, points, box, want)
    after = paste.lip_lab(drawn, paste.lip_band(points, box, -paste.LIP_ERODE))
    assert after is not None and np.linalg.norm(after - want) < 1.5
    assert (drawn[:4] == own[:4]).all() and (drawn[-4:] == own[-4:]).all()  # skin far from the lips
