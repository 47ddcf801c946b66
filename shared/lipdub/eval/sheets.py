"""Contact sheets: per clip one PNG of mouth crops, source above output, 16 frames, at 2x the video's own
pixels (nearest neighbour, so no softness is added or hidden), one pair of rows per protocol.

The crop is a square of the clip's median mouth-box side (lip width × 1.7, as lipdub.eval.image's boxes)
centred on the *source* frame's lips, the same box in the source and the output: what moved is the
renderer's doing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lipdub.face import landmarks as L

SHEET_FRAMES = 16
ZOOM = 2
MAX_CELL = 320  # px on the sheet: a mouth box over 160 video px is shown smaller than 2x (noted on the sheet)
LABEL_H = 22


@dataclass
class SheetRows:
    """The crops of one protocol: frame indices, source crops and output crops (same length)."""

    frames: list[int] = field(default_factory=list)
    source: list[np.ndarray] = field(default_factory=list)
    output: list[np.ndarray] = field(default_factory=list)


def sheet_frames(n: int, count: int = SHEET_FRAMES) -> list[int]:
    """`count` output frames spread evenly over n (all of them when fewer)."""
    if n <= count:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, count)})


def crop_side(landmarks: np.ndarray, valid: np.ndarray) -> int:
    """The clip's crop side in video pixels: the median lip width × 1.7 (even, at least 16)."""
    if not valid.any():
        return 16
    lips = landmarks[valid][:, L.LIPS, 0]
    side = float(np.median(lips.max(1) - lips.min(1))) * 1.7
    return max(16, int(round(side / 2)) * 2)


def mouth_crop(frame: np.ndarray, points: np.ndarray, side: int) -> np.ndarray:
    """The `side`-px square about the lips' centre (edges replicated beyond the frame), zoomed for the sheet."""
    centre = points[L.LIPS, :2].astype(np.float64)
    cx, cy = (centre.min(0) + centre.max(0)) / 2
    m = np.array([[1, 0, side / 2 - cx], [0, 1, side / 2 - cy]], np.float32)
    crop = cv2.warpAffine(frame, m, (side, side), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    cell = min(side * ZOOM, MAX_CELL)
    return cv2.resize(crop, (cell, cell), interpolation=cv2.INTER_NEAREST if cell == side * ZOOM
                      else cv2.INTER_AREA)


def _label(width: int, text: str) -> np.ndarray:
    strip = np.full((LABEL_H, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (6, LABEL_H - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def write_sheet(path: Path, clip: str, protocols: dict[str, SheetRows]) -> Path | None:
    """One PNG: for each protocol a title, the source row and the output row (frame numbers above)."""
    blocks = []
    width = 0
    for rows in protocols.values():
        if rows.source:
            width = max(width, sum(c.shape[1] for c in rows.source) + 70)
    if not width:
        return None
    for name, rows in protocols.items():
        if not rows.source:
            continue
        cell = rows.source[0].shape[1]
        zoom = f"{ZOOM}x" if cell == rows.source[0].shape[0] and cell < MAX_CELL else f"{cell} px cells"
        blocks.append(_label(width, f"{clip} - {name} ({zoom}); frames "
                                    + " ".join(str(t) for t in rows.frames)))
        for title, crops in (("source", rows.source), ("output", rows.output)):
            line = np.full((cell, width, 3), 255, np.uint8)
            cv2.putText(line, title, (4, cell // 2 + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                        cv2.LINE_AA)
            x = 70
            for c in crops:
                line[:c.shape[0], x:x + c.shape[1]] = c
                x += c.shape[1]
            blocks.append(line)
        blocks.append(np.full((6, width, 3), 255, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(blocks), cv2.COLOR_RGB2BGR))
    return path
