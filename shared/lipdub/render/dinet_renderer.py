"""The neural renderer: geometric warp of the lower face, then the DINet generator re-draws the mouth.

Per frame: (1) the target lip landmarks (today from the target opening via `warp.target_points`; later
directly from the audio model's lip shape) drive the full-resolution displacement warp of `warp.py`, which
moves jaw, chin and lips; (2) the mouth window of the warped frame, with the mouth masked and the target
lip map drawn, is the prompt of the generator, which re-draws lips, teeth and the inner mouth from K
reference windows of the same video (cached encodings); (3) the generated mouth is colour-matched and pasted
back inside the feathered lower-face mask (`paste.py`). Everything outside the lower face stays untouched.

`render_batch` runs the generator on many frames at once (fp16 autocast on CUDA); `__call__` is the
per-frame `Renderer` protocol of the render stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lipdub.face import landmarks as L
from lipdub.render import paste, prompt, window
from lipdub.render.dinet import DinetGenerator, load_checkpoint
from lipdub.render.warp import GRID_STEP, WarpRenderer, target_points

MOVABLE = sorted(set(L.LIPS + L.JAW[3:-3]))  # landmarks a target may move (the jaw ends are warp anchors)


class DinetRenderer:
    name = "dinet"

    def __init__(self, model: DinetGenerator, references: Sequence[tuple[np.ndarray, np.ndarray]],
                 device: str = "cpu", threads: int | None = None) -> None:
        """`references`: K (frame, landmarks) pairs of the source video (see `prompt.select_references`)."""
        cfg = model.config
        if len(references) != cfg.refs:
            raise ValueError(f"{cfg.name} needs {cfg.refs} references, got {len(references)}")
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.fp16 = self.device.type == "cuda"
        self.size = cfg.size
        self.warp = WarpRenderer()
        refs = []
        for frame, points in references:
            a = window.window_affine(points, self.size)
            refs.append(prompt.reference_input(window.crop(frame, a, self.size), window.apply(a, points[:, :2])))
        with torch.no_grad():
            self.ref_feat = self.model.encode_refs(torch.from_numpy(np.concatenate(refs)[None]).to(self.device))

    @classmethod
    def for_track(cls, track: object, checkpoint: Path, device: str = "cpu", sha256: str | None = None,
                  threads: int | None = None) -> DinetRenderer:
        """Renderer for a prepared source (`SourceTrack`): references from its most open frames."""
        model, _ = load_checkpoint(checkpoint, sha256)
        landmarks: np.ndarray = track.landmarks  # type: ignore[attr-defined]
        valid: np.ndarray = track.valid  # type: ignore[attr-defined]
        k = model.config.refs
        opening = L.mouth_opening(landmarks)
        chosen = getattr(track, "reference_frames", None)  # prep's pick (most-open half, diverse openings)
        if chosen is not None and len(chosen) >= k:
            by_opening = sorted((int(i) for i in chosen), key=lambda i: float(opening[i]))
            idx = [by_opening[j] for j in np.linspace(0, len(by_opening) - 1, k).round().astype(int)]
        else:
            idx = prompt.select_references(opening, valid, k)
        with track.reader() as reader:  # type: ignore[attr-defined]
            refs = [(reader[i], landmarks[i]) for i in idx]
        return cls(model, refs, device, threads)

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
        return self.render_batch([frame], [points], [self.target_from_opening(points, opening)])[0]

    @staticmethod
    def target_from_opening(points: np.ndarray, opening: float) -> np.ndarray:
        """Full target landmark set [478, 2] for a target mouth opening (lips and jaw moved)."""
        idx, moved = target_points(points, opening)
        target = points[:, :2].copy()
        target[idx] = moved
        return target

    def render_batch(self, frames: Sequence[np.ndarray], points: Sequence[np.ndarray],
                     targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Render many frames: `targets` are full [478, 2] target landmark sets (frame pixels)."""
        jobs, sources = [], []
        for frame, pts, tgt in zip(frames, points, targets):
            job = self._prepare(frame, pts, tgt)
            jobs.append(job)
            if job is not None:
                sources.append(job["source"])
        if sources:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                src = torch.from_numpy(np.stack(sources)).to(self.device)
                raw, blend = self.model.generate(src, ref_feat=self.ref_feat)
            raw_np = (raw.float().clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy()
            blend_np = blend.float()[:, 0].cpu().numpy()
        out, k = [], 0
        for frame, job in zip(frames, jobs):
            if job is None:
                out.append(frame)
                continue
            out.append(self._finish(frame, job, raw_np[k], blend_np[k]))
            k += 1
        return out

    def _prepare(self, frame: np.ndarray, points: np.ndarray, target: np.ndarray) -> dict | None:
        moved = MOVABLE
        face_px = float(np.ptp(points[L.FACE_OVAL, 1]))
        # The displacement field is smooth: ~40 evaluations across the face height are plenty.
        step = max(GRID_STEP, round(face_px / 40))
        displaced = self.warp.displace(frame, points, np.array(moved), target[moved, :2].astype(np.float64), step)
        if displaced is None:
            return None
        box, crop, warped, _, _ = displaced
        x0, y0, _, _ = box
        face = paste.lower_face_mask(points, box, self.warp.feather * face_px)
        region = crop.astype(np.float32) * (1 - face[..., None]) + warped * face[..., None]
        # The window sits where the *source* face is (stable landmarks), and is cut from the warped region.
        a = window.window_affine(points, self.size)
        a_box = a.copy()
        a_box[:, 2] += a[:, :2] @ np.array([x0, y0], np.float32)
        win = window.crop(np.clip(region, 0, 255).astype(np.uint8), a_box, self.size)
        tw = window.apply(a, target[:, :2])
        source = prompt.source_input(win, tw)
        return {"box": box, "region": region, "face": face, "affine": a_box, "source": source}

    def _finish(self, frame: np.ndarray, job: dict, raw: np.ndarray, blend: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = job["box"]
        source = job["source"]
        window_rgb = source[:3].transpose(1, 2, 0) * 255.0  # the real pixels wherever the mask is 0
        region = paste.paste_mouth(job["region"], raw, blend, source[3], window_rgb, job["affine"], job["face"])
        out = frame.copy()
        out[y0:y1, x0:x1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)
        return out
