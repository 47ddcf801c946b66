"""MediaPipe face detection (0.10.21 bundled full-range model): face boxes, used to count faces."""

from __future__ import annotations

from types import TracebackType

import numpy as np


class FaceDetector:
    """Face boxes in pixels [K, 4] (x0, y0, x1, y1) with scores; the full-range model also finds faces
    far from the camera (small in the frame)."""

    def __init__(self, min_confidence: float = 0.6, full_range: bool = True) -> None:
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(model_selection=int(full_range),
                                                              min_detection_confidence=min_confidence)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        result = self._det.process(np.ascontiguousarray(rgb))
        boxes = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            boxes.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h))
        return np.array(boxes, np.float32).reshape(-1, 4)

    def close(self) -> None:
        self._det.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
