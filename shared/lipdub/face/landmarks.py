"""Named index groups of MediaPipe's 478-point face mesh, measures derived from them, and the similarity fit
between two sets of them."""

from __future__ import annotations

import numpy as np

# Closed loops, left mouth corner first (image coordinates, subject facing the camera).
LIPS_OUTER_UPPER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LIPS_OUTER_LOWER = [291, 375, 321, 405, 314, 17, 84, 181, 91, 146, 61]
LIPS_INNER_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LIPS_INNER_LOWER = [308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]
LIPS_OUTER = LIPS_OUTER_UPPER + LIPS_OUTER_LOWER[1:-1]
LIPS_INNER = LIPS_INNER_UPPER + LIPS_INNER_LOWER[1:-1]
LIPS = LIPS_OUTER + LIPS_INNER  # the 40 lip landmarks (FACEMESH_LIPS)

FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
# Lower half of the oval, from the right cheek (454) round the chin (152) to the left cheek (234).
JAW = FACE_OVAL[FACE_OVAL.index(454): FACE_OVAL.index(234) + 1]

EYE_CORNERS = [33, 133, 362, 263]  # outer/inner corners of both eyes
NOSE_TIP = 1
NOSE_BOTTOM = 2  # sub-nasal point: the top of the region we re-draw
STABLE = EYE_CORNERS + [NOSE_TIP, 6, 168]  # points a moving mouth does not move

UPPER_INNER_MID, LOWER_INNER_MID = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 78, 308  # inner mouth corners
CHIN = 152


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap over inner mouth width, per frame; points [..., 478, 2+] in pixels. Scale-free."""
    gap = np.linalg.norm(points[..., UPPER_INNER_MID, :2] - points[..., LOWER_INNER_MID, :2], axis=-1)
    width = np.linalg.norm(points[..., MOUTH_LEFT, :2] - points[..., MOUTH_RIGHT, :2], axis=-1)
    return gap / np.maximum(width, 1e-6)


def inter_ocular(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[..., 33, :2] - points[..., 263, :2], axis=-1)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale s, rotation R, translation t): dst ≈ s·R·src + t; [K, 2] points."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1.0  # a reflection is never a valid face alignment
    rot = u @ sign @ vt
    var = (a ** 2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ sign) / var) if var > 0 else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s
