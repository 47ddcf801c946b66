"""The mouth representation the audio models predict: PCA coefficients of pose- and scale-normalized lip+jaw motion.

Face-mesh points are aligned per frame onto a canonical frontal head (3-D similarity transform fitted on points
a moving mouth does not move), so head turns and zoom don't look like mouth motion; units are inter-ocular
distances. Each clip's own mean shape is subtracted, so the coefficients describe motion, not identity. The basis
(template face, components, rest coefficients) is fit on the training clips and shipped with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipdub.face.landmarks import LIPS, LOWER_INNER_MID, MOUTH_LEFT, MOUTH_RIGHT, UPPER_INNER_MID

# Chin and lower jaw line (the part of the face oval that moves with the jaw).
JAW_POINTS = [172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397]
MOUTH_POINTS = LIPS + JAW_POINTS
# Rigid reference: eye corners, nose bridge and ridge, forehead and the sides of the head by the ears.
ALIGN_POINTS = [33, 133, 362, 263, 168, 6, 197, 195, 10, 151, 9, 127, 356, 234, 454]
_EYE_L, _EYE_R = 33, 263

_IDX = {p: i for i, p in enumerate(MOUTH_POINTS)}
GAP_POINTS = (_IDX[UPPER_INNER_MID], _IDX[LOWER_INNER_MID])
WIDTH_POINTS = (_IDX[MOUTH_LEFT], _IDX[MOUTH_RIGHT])


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: scale s, rotation R, translation t minimising |s R src + t - dst|; src/dst [N, 3]."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix) / max((a**2).sum() / len(src), 1e-12))
    return scale, rot, mu_d - scale * rot @ mu_s


def reference_head(landmarks: np.ndarray) -> np.ndarray:
    """Canonical rigid points [len(ALIGN_POINTS), 3]: the mean aligned head of the given frames, eyes 1 apart."""
    valid = landmarks[~np.isnan(landmarks[:, 0, 0])]
    ref = valid[0, ALIGN_POINTS].astype(np.float64)
    for _ in range(2):  # generalized Procrustes: align all to the current mean, re-average
        aligned = []
        for pts in valid[:: max(1, len(valid) // 2000)]:
            s, r, t = similarity(pts[ALIGN_POINTS].astype(np.float64), ref)
            aligned.append(s * pts[ALIGN_POINTS] @ r.T + t)
        ref = np.mean(aligned, axis=0)
        eye = np.linalg.norm(ref[ALIGN_POINTS.index(_EYE_L)] - ref[ALIGN_POINTS.index(_EYE_R)])
        ref = (ref - ref.mean(0)) / eye
    return ref


def canonical_mouth(landmarks: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[T, len(MOUTH_POINTS), 3] mouth points in the canonical head frame (NaN where no face)."""
    out = np.full((len(landmarks), len(MOUTH_POINTS), 3), np.nan, np.float32)
    for i, pts in enumerate(landmarks):
        if np.isnan(pts[0, 0]):
            continue
        s, r, t = similarity(pts[ALIGN_POINTS].astype(np.float64), ref)
        out[i] = s * pts[MOUTH_POINTS] @ r.T + t
    return out


def shape_opening(shapes: np.ndarray) -> np.ndarray:
    """Inner-lip gap over inner mouth width for canonical shapes [..., P, 3] (upright head, y down).

    The gap is signed (negative when a predicted upper lip passes below the lower one), so the opening is a
    smooth, monotonic function of the coefficients instead of folding back at zero.
    """
    gap = shapes[..., GAP_POINTS[1], 1] - shapes[..., GAP_POINTS[0], 1]
    width = np.linalg.norm(shapes[..., WIDTH_POINTS[0], :2] - shapes[..., WIDTH_POINTS[1], :2], axis=-1)
    return gap / np.maximum(width, 1e-6)


@dataclass
class MouthBasis:
    """PCA of per-clip-centred canonical mouth shapes, with a template face to turn motion back into openings."""

    ref: np.ndarray  # [A, 3] canonical rigid points (for aligning new faces)
    template: np.ndarray  # [P, 3] mean canonical mouth over training clips
    components: np.ndarray  # [K, P·3] unit-norm
    scale: np.ndarray  # [K] coefficient std on the training set (models predict coefficients / scale)
    rest: np.ndarray  # [K] normalised coefficients of a resting (closed, relaxed) mouth
    explained: np.ndarray  # [K] explained-variance ratio
    # Models regress to the mean (ridge shrinkage, distilled into the student too): predicted coefficients are
    # multiplied by this per-component gain, calibrated on held-out predictions, to restore real amplitudes.
    gain: np.ndarray | None = None  # [K]

    @property
    def n_components(self) -> int:
        return len(self.components)

    @classmethod
    def fit(cls, shapes: list[np.ndarray], ref: np.ndarray, n_components: int = 8) -> MouthBasis:
        """`shapes`: per clip [T, P, 3] canonical mouths (NaN rows allowed)."""
        valid = [s[~np.isnan(s[:, 0, 0])] for s in shapes]
        template = np.concatenate(valid).mean(0)
        motion = np.concatenate([(s - s.mean(0)).reshape(len(s), -1) for s in valid])
        _, sv, vt = np.linalg.svd(motion - motion.mean(0), full_matrices=False)
        var = sv**2 / len(motion)
        comps = vt[:n_components]
        coeffs = motion @ comps.T
        scale = coeffs.std(0)
        # Rest: per clip, the frames with the most closed mouth (lowest 10% opening) are its resting shape.
        rests = []
        for s in valid:
            op = shape_opening(s)
            closed = s[op <= np.percentile(op, 10)]
            rests.append(((closed - s.mean(0)).reshape(len(closed), -1) @ comps.T).mean(0))
        return cls(ref=ref.astype(np.float32), template=template.astype(np.float32),
                   components=comps.astype(np.float32), scale=scale.astype(np.float32),
                   rest=(np.median(rests, axis=0) / scale).astype(np.float32),
                   explained=(var[:n_components] / var.sum()).astype(np.float32),
                   gain=np.ones(n_components, np.float32))

    def encode(self, shapes: np.ndarray) -> np.ndarray:
        """Canonical shapes [T, P, 3] of one clip → [T, K] normalised coefficients (clip mean removed)."""
        motion = (shapes - np.nanmean(shapes, axis=0)).reshape(len(shapes), -1)
        return (motion @ self.components.T) / self.scale

    def motion(self, coeffs: np.ndarray) -> np.ndarray:
        """[T, K] normalised coefficients → [T, P, 3] displacement of the mouth points (canonical units)."""
        return ((coeffs * self.scale) @ self.components).reshape(len(coeffs), -1, 3)

    def opening(self, coeffs: np.ndarray) -> np.ndarray:
        """Mouth opening (gap / width) of the template face moved by each frame's coefficients."""
        return shape_opening(self.template[None] + self.motion(coeffs))

    def opening_direction(self, step: float = 1e-3) -> np.ndarray:
        """[K] change of the opening per unit of each coefficient, at the template (zero motion). The opening
        is nearly linear in the coefficients (r 0.997 over their training range), so `coeffs @ direction`
        tracks it."""
        zero = np.zeros((1, self.n_components), np.float32)
        moved = step * np.eye(self.n_components, dtype=np.float32)
        return ((self.opening(moved) - self.opening(zero)) / step).astype(np.float32)

    def rest_opening(self) -> float:
        return float(self.opening(self.rest[None])[0])

    def save(self, path: Path) -> None:
        gain = self.gain if self.gain is not None else np.ones(self.n_components, np.float32)
        np.savez(path, ref=self.ref, template=self.template, components=self.components, scale=self.scale,
                 rest=self.rest, explained=self.explained, gain=gain.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> MouthBasis:
        with np.load(path) as d:
            fields = {k: d[k] for k in ("ref", "template", "components", "scale", "rest", "explained")}
            return cls(**fields, gain=d.get("gain"))
