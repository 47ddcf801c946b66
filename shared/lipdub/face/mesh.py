"""MediaPipe face mesh (0.10.21, bundled models, 478 points with iris refinement)."""

from __future__ import annotations

from types import TracebackType

import numpy as np


class FaceMesh:
    """Per-frame face landmarks in pixels: a list of [478, 3] arrays (x, y, z·width), largest face first.

    `tracking=True` runs MediaPipe in video mode: the detector runs only when tracking is lost, which is
    both faster and steadier than per-image detection.
    """

    def __init__(self, max_faces: int = 1, tracking: bool = True, min_confidence: float = 0.5) -> None:
        # MediaPipe 0.10.21 logs a few start-up notes (TFLite delegate, feedback manager, NORM_RECT) straight
        # to file descriptor 2 through absl, before any logging is set up: neither GLOG_minloglevel nor
        # TF_CPP_MIN_LOG_LEVEL silences them (checked). The CLI filters them out (lipdub.native_stderr);
        # worker logs keep them.
        import mediapipe as mp  # heavy import, only where faces are needed

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not tracking,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def __call__(self, rgb: np.ndarray) -> list[np.ndarray]:
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for face in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            faces.append(pts)
        faces.sort(key=lambda p: -float(np.ptp(p[:, 0]) * np.ptp(p[:, 1])))
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
