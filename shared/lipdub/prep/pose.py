"""Head pose from the 3D face mesh: a similarity fit of the canonical mean face to each frame.

Only rigid points (eye corners, nose bridge, forehead, cheekbones) drive the fit, so a moving jaw or
mouth never moves the head (DH_live fits all 141 points, which is why its chin jitters).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CANONICAL_FILE = Path(__file__).with_name("canonical_face.npy")

# Mesh points that a talking face does not move relative to the skull.
RIGID = [33, 133, 362, 263,  # eye corners
         6, 168, 197, 195, 5, 4, 1,  # nose bridge and tip
         10, 151, 9, 8,  # forehead mid-line
         234, 454, 127, 356, 93, 323,  # sides of the face at ear level
         21, 251, 54, 284, 103, 332,  # upper face oval
         117, 346, 50, 280, 116, 345]  # cheekbones


@lru_cache(maxsize=1)
def canonical_face() -> np.ndarray:
    """The canonical mean face [478, 3]: frontal, centred on the rigid points, inter-ocular distance 1."""
    return np.load(CANONICAL_FILE).astype(np.float64)


@dataclass(frozen=True)
class Pose:
    """Per-frame similarity transforms mapping canonical points c to image points p = s·R·c + t."""

    rotation: np.ndarray  # [N, 3, 3]
    translation: np.ndarray  # [N, 3] pixels
    scale: np.ndarray  # [N] pixels per canonical unit (≈ outer-eye-corner distance in px)

    def angles(self) -> np.ndarray:
        """[N, 3] yaw, pitch, roll in degrees (0 = facing the camera)."""
        return euler_degrees(self.rotation)

    def to_image(self, shape: np.ndarray) -> np.ndarray:
        """Canonical-space shapes [N, K, 3] → image points [N, K, 3] (in the dtype of `shape`: float32
        keeps a 10-minute track's temporaries small)."""
        t = shape.dtype
        return (self.scale.astype(t)[:, None, None] * np.einsum("nij,nkj->nki", self.rotation.astype(t), shape)
                + self.translation.astype(t)[:, None, :])

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """Image points [N, K, 3] → pose-normalised shapes in canonical space [N, K, 3] (dtype of `points`)."""
        t = points.dtype
        centred = points - self.translation.astype(t)[:, None, :]
        return np.einsum("nji,nkj->nki", self.rotation.astype(t), centred) / self.scale.astype(t)[:, None, None]


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares s, R, t with dst ≈ s·R·src + t (Umeyama 1991), reflections excluded."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / max((a ** 2).sum(), 1e-12))
    return rot, mu_d - scale * rot @ mu_s, scale


def fit_pose(points: np.ndarray, present: np.ndarray | None = None, canonical: np.ndarray | None = None) -> Pose:
    """Fit the canonical face's rigid points to the frames of `points` [N, 478, 3] (pixels) where
    `present` is True (all by default); other frames get the identity pose."""
    ref = (canonical_face() if canonical is None else canonical)[RIGID]
    n = len(points)
    rot, trans, scale = np.tile(np.eye(3), (n, 1, 1)), np.zeros((n, 3)), np.ones(n)
    frames = range(n) if present is None else np.flatnonzero(present)
    for i in frames:
        rot[i], trans[i], scale[i] = fit_similarity(ref, points[i, RIGID].astype(np.float64))
    return Pose(rot, trans, scale)


def euler_degrees(rotation: np.ndarray) -> np.ndarray:
    """Yaw (about the image y axis), pitch (x axis), roll (z axis) of R = Rz·Ry·Rx, in degrees."""
    r = rotation
    yaw = np.arctan2(-r[..., 2, 0], np.hypot(r[..., 0, 0], r[..., 1, 0]))
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """[N, 3, 3] → [N, 4] unit quaternions (w, x, y, z), signs made continuous over time for filtering."""
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(rotation).as_quat()[:, [3, 0, 1, 2]]
    for i in range(1, len(q)):
        if np.dot(q[i], q[i - 1]) < 0:
            q[i] = -q[i]
    return q


def quaternion_to_rotation(q: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()


def orient_frontal(shape: np.ndarray) -> np.ndarray:
    """Rotate, centre and scale a mean face so it looks straight at the camera (canonical frame).

    x runs from the subject's right outer eye corner (33) to the left one (263), y from forehead (10)
    to chin (152) made orthogonal to x, z = x × y (away from the camera, like MediaPipe's depth);
    origin at the rigid points' centroid; unit = outer-eye-corner distance.
    """
    x = shape[263] - shape[33]
    x /= np.linalg.norm(x)
    y = shape[152] - shape[10]
    y -= x * np.dot(x, y)
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    basis = np.stack([x, y, z])
    out = (shape - shape[RIGID].mean(0)) @ basis.T
    return out / np.linalg.norm(out[263] - out[33])


def generalized_procrustes(shapes: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Mean shape of many face meshes [M, 478, 3] after removing each one's pose (rigid points)."""
    mean = orient_frontal(shapes[0].astype(np.float64))
    for _ in range(iterations):
        aligned = np.empty_like(shapes, dtype=np.float64)
        for i, s in enumerate(shapes.astype(np.float64)):
            rot, t, sc = fit_similarity(s[RIGID], mean[RIGID])
            aligned[i] = sc * s @ rot.T + t
        new = orient_frontal(aligned.mean(0))
        if np.abs(new - mean).max() < 1e-6:
            return new
        mean = new
    return mean
