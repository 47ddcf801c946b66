"""Jitter removal: the head pose and the pose-normalised shape are smoothed separately, zero-phase.

A Gaussian filter applied over time in both directions has no lag. The pose (rotation quaternion,
translation, log-scale) is smoothed strongly enough to remove the mesh's frame-to-frame wobble. The
shape is split: points the face can't move quickly relative to the skull (nose, forehead, cheeks, face
sides) get strong smoothing; the lips, jaw, eyes and brows only a light one, so mouth shapes and
blinks keep their timing and amplitude instead of smearing. Runs of frames without a face, and shot cuts
(lipdub.prep.shots), are never smoothed across.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lipdub.face import landmarks as L
from lipdub.prep.pose import Pose, canonical_face, quaternion_to_rotation, rotation_to_quaternion

POSE_SIGMA = 1.5  # frames (60 ms)
RIGID_SHAPE_SIGMA = 3.0
MOBILE_SHAPE_SIGMA = 0.7  # ≈ the 3-tap [.1, .8, .1] kernel: light enough to keep single-frame mouth shapes


@lru_cache(maxsize=1)
def mobile_points() -> np.ndarray:
    """Mesh points that move fast relative to the skull: everything below the nose, the eyes (blinks),
    irises and eyebrows."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    canon = canonical_face()
    mobile = set(np.flatnonzero(canon[:, 1] > canon[L.NOSE_BOTTOM, 1] - 0.02).tolist())
    for group in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE, fmc.FACEMESH_LEFT_EYEBROW,
                  fmc.FACEMESH_RIGHT_EYEBROW, fmc.FACEMESH_LEFT_IRIS, fmc.FACEMESH_RIGHT_IRIS):
        for a, b in group:
            mobile.update((a, b))
    mobile.update(range(468, 478))
    mobile.update(L.LIPS + L.JAW)
    return np.array(sorted(mobile))


def runs(valid: np.ndarray, cuts: Sequence[int] = ()) -> list[np.ndarray]:
    """Index arrays of the consecutive runs of True in `valid`, split where a shot starts (`cuts`)."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return []
    starts = (np.diff(idx) > 1) | np.isin(idx[1:], np.asarray(cuts, np.int64))
    return np.split(idx, np.flatnonzero(starts) + 1)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_filter1d(x, sigma, axis=0, mode="nearest", truncate=3.0) if len(x) > 2 and sigma > 0 else x


def smooth_pose(pose: Pose, valid: np.ndarray, sigma: float = POSE_SIGMA, cuts: Sequence[int] = ()) -> Pose:
    rot, trans, scale = pose.rotation.copy(), pose.translation.copy(), pose.scale.copy()
    for run in runs(valid, cuts):
        q = _smooth(rotation_to_quaternion(pose.rotation[run]), sigma)
        rot[run] = quaternion_to_rotation(q)
        trans[run] = _smooth(pose.translation[run], sigma)
        scale[run] = np.exp(_smooth(np.log(pose.scale[run]), sigma))
    return Pose(rot, trans, scale)


CHUNK = 256  # frames per smoothing window: temporaries stay small however long the run is
PAD = 16  # > the filters' reach (3·RIGID_SHAPE_SIGMA): chunked output equals whole-run filtering


def smooth_shape(shape: np.ndarray, rigid_sigma: float = RIGID_SHAPE_SIGMA,
                 mobile_sigma: float = MOBILE_SHAPE_SIGMA) -> np.ndarray:
    """Smooth one run of pose-normalised shapes [T, 478, 3] over time, rigid and mobile points apart."""
    out = shape.copy()
    mobile = mobile_points()
    rigid = np.setdiff1d(np.arange(shape.shape[1]), mobile)
    out[:, rigid] = _smooth(shape[:, rigid], rigid_sigma)
    out[:, mobile] = _smooth(shape[:, mobile], mobile_sigma)
    return out


def smooth_landmarks(points: np.ndarray, pose: Pose, valid: np.ndarray,
                     cuts: Sequence[int] = ()) -> tuple[np.ndarray, Pose]:
    """Smoothed landmarks [N, 478, 3] (float32) and the smoothed pose.

    Each run of valid frames is processed in windows of CHUNK frames with PAD frames of context on both
    sides, so memory does not grow with the run's length and the result equals filtering the whole run.
    """
    smooth = smooth_pose(pose, valid, cuts=cuts)
    out = np.array(points, np.float32)
    for run in runs(valid, cuts):
        for a in range(0, len(run), CHUNK):
            lo, hi = max(0, a - PAD), min(len(run), a + CHUNK + PAD)
            idx = run[lo:hi]
            raw_pose = Pose(pose.rotation[idx], pose.translation[idx], pose.scale[idx])
            shape = smooth_shape(raw_pose.to_canonical(np.asarray(points[idx], np.float32)))
            inner = slice(a - lo, a - lo + min(CHUNK, len(run) - a))
            keep = idx[inner]
            new_pose = Pose(smooth.rotation[keep], smooth.translation[keep], smooth.scale[keep])
            out[keep] = new_pose.to_image(shape[inner])
    return out, smooth


JITTER_POINTS = [L.NOSE_TIP, *L.EYE_CORNERS]


def still_jitter(points: np.ndarray, index: list[int] = JITTER_POINTS) -> float:
    """Jitter on a still-head clip: RMS distance (px) of the nose-tip and eye-corner landmarks from
    their mean position over the clip."""
    xy = points[:, index, :2].astype(np.float64)
    return float(np.sqrt(((xy - xy.mean(0)) ** 2).sum(-1).mean()))


def frame_jitter(points: np.ndarray, index: list[int] = JITTER_POINTS) -> float:
    """Jitter on any clip: RMS of the second temporal difference (px/frame²) of the same landmarks;
    smooth head motion contributes little, frame-to-frame noise a lot."""
    xy = points[:, index, :2].astype(np.float64)
    acc = xy[2:] - 2 * xy[1:-1] + xy[:-2]
    return float(np.sqrt((acc ** 2).sum(-1).mean())) if len(acc) else 0.0
