"""The neural renderer: geometric warp of the lower face, then the DINet generator re-draws the mouth.

Per frame: (1) the full-resolution displacement warp of `warp.py` moves jaw, chin and lips to the target's
mouth opening (`warp.target_points`); (2) the mouth window of the warped frame, with the mouth masked and
the target lip map drawn (the audio model's predicted lip shape, `lips.LipTargets`, or the opening rule's
lips), is the prompt of the generator, which re-draws lips, teeth and the inner mouth from K
reference windows of the same video (encoded once per source); (3) the mouth is colour-matched and pasted
back inside the feathered lower-face mask (`paste.py`); (4) the closest reference's fine detail, at frame
resolution, is carried onto the target lips (`detail.py`). Everything outside the lower face stays
untouched, so all per-frame work is done on the smallest box that holds the feathered lower-face mask and
the window, never on the whole frame.

`render_batch` runs the generator on many frames at once (fp16 autocast on CUDA; channels-last tensors on
CPU, where oneDNN's depthwise convolutions are several times faster in that layout); `__call__` is the
per-frame `Renderer` protocol. `cached_model` keeps loaded generators per process.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from lipdub.digest import sha256_file
from lipdub.face import landmarks as L
from lipdub.render import paste, prompt, window
from lipdub.render.detail import LipDetail
from lipdub.render.dinet import ChecksumError, DinetGenerator, expected_sha256, load_checkpoint
from lipdub.render.warp import GRID_STEP, MOVABLE, WarpRenderer, target_from_opening, target_landmarks

# The generator's mouth is soft: 4,000 CPU training steps on a 96-px window do not draw fine texture. The
# references' detail above this cut (window px; the generator keeps the lower frequencies) is added on the
# target lips at frame resolution, times DETAIL (0: off); see `detail.py` for what was measured.
DETAIL_SIGMA = 3.0
DETAIL = 1.0
# Frames per generator call, by device type. On CPU the stage prepares the next batch while the last one is
# generated, so a small batch keeps both halves busy and memory low; a GPU wants enough frames per call to
# fill it, while the CPU halves (warp, paste-back) bound the stage anyway (bench/bench_gpu.py sweeps it).
BATCH = {"cpu": 4, "cuda": 16}
MODEL_CACHE = 4  # generators kept per process (the generic weights plus a few enrolled fine-tunes)
_models: OrderedDict[tuple[str, str, str], DinetGenerator] = OrderedDict()
_models_lock = threading.Lock()


def cached_model(checkpoint: Path, device: str = "cpu", sha256: str | None = None) -> DinetGenerator:
    """The checkpoint's generator on `device`, loaded once per process and kept by (path, SHA-256, device).

    The file's hash is checked on every call (cheap for a few MB): a replaced file is a new key, and a file
    that no longer matches its expected hash is refused as by `load_checkpoint`. Cached generators are
    shared, in eval mode, and only ever run under `torch.no_grad` (renderers never change them).
    """
    got = sha256_file(checkpoint)
    want = sha256 or expected_sha256(checkpoint)
    if want is not None and got != want:
        raise ChecksumError(f"{checkpoint}: SHA-256 {got} does not match the expected {want}")
    key = (str(checkpoint.resolve()), got, device)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model, _ = load_checkpoint(checkpoint, sha256)
            model = _for_inference(model, torch.device(device))
            _models[key] = model
            while len(_models) > MODEL_CACHE:
                _models.popitem(last=False)
        _models.move_to_end(key)
        return model


def _for_inference(model: DinetGenerator, device: torch.device) -> DinetGenerator:
    model = model.to(device).eval()
    if device.type == "cpu":
        # Module.to takes memory_format (torch's docs), though its type stubs leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


class DinetRenderer:
    name = "dinet"

    def __init__(self, model: DinetGenerator, references: Sequence[tuple[np.ndarray, np.ndarray]],
                 device: str = "cpu", threads: int | None = None, batch: int | None = None,
                 detail: float = DETAIL) -> None:
        """`references`: K (frame, landmarks) pairs of the source video (see `prompt.select_references`);
        `batch`: frames per generator call in the render stage (default: BATCH of the device); `detail`:
        strength of the references' lip detail (DETAIL; 0: off); `threads`: torch intra-op threads (process-wide; default 1 on CPU)."""
        cfg = model.config
        if len(references) != cfg.refs:
            raise ValueError(f"{cfg.name} needs {cfg.refs} references, got {len(references)}")
        self.device = torch.device(device)
        if threads is None and self.device.type == "cpu":
            # One intra-op thread: the render stage's decoder and encoder run beside the generator, and on
            # 2 busy cores a second torch thread only spins (720p, batch 4: 6.3 ms per frame with 1 thread,
            # 130 ms with 2).
            threads = 1
        if threads is not None:
            torch.set_num_threads(threads)
        self.model = _for_inference(model, self.device)
        self.fp16 = self.device.type == "cuda"
        self.layout = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.size = cfg.size
        self.batch = batch or BATCH.get(self.device.type, BATCH["cpu"])
        self.detail = detail
        self.warp = WarpRenderer()
        refs = []
        for frame, points in references:
            a = window.window_affine(points, self.size)
            win, wp = window.crop(frame, a, self.size), window.apply(a, points[:, :2])
            refs.append(prompt.reference_input(win, wp))
        self.lip_detail = LipDetail(references, self.size, DETAIL_SIGMA)
        with torch.no_grad():
            x = torch.from_numpy(np.concatenate(refs)[None]).to(self.device, memory_format=self.layout)
            self.ref_feat = self.model.encode_refs(x)

    @classmethod
    def for_track(cls, track: object, checkpoint: Path, device: str = "cpu", sha256: str | None = None,
                  threads: int | None = None, batch: int | None = None) -> DinetRenderer:
        """Renderer for a prepared source (`SourceTrack`): references from its most open frames."""
        model = cached_model(checkpoint, device, sha256)
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
        return cls(model, refs, device, threads, batch)

    def __call__(self, frame: np.ndarray, points: np.ndarray, opening: float) -> np.ndarray:
        return self.render_batch([frame], [points], [self.target_from_opening(points, opening)])[0]

    target_from_opening = staticmethod(target_from_opening)
    target = staticmethod(target_landmarks)

    def render_batch(self, frames: Sequence[np.ndarray], points: Sequence[np.ndarray],
                     targets: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Render many frames: `targets` are full [478, 2] target landmark sets (frame pixels)."""
        return self.finish(self.prepare(frames, points, targets))

    def prepare(self, frames: Sequence[np.ndarray], points: Sequence[np.ndarray],
                targets: Sequence[np.ndarray]) -> list[tuple[np.ndarray, dict | None]]:
        """First half of `render_batch` (warp, prompt): the render stage runs it for the next frames while
        another thread runs `finish` on the last ones."""
        return [(frame, self._prepare(frame, pts, tgt)) for frame, pts, tgt in zip(frames, points, targets)]

    def finish(self, prepared: Sequence[tuple[np.ndarray, dict | None]]) -> list[np.ndarray]:
        """Second half of `render_batch`: the generator on all prepared frames, paste-back, lip detail."""
        sources = [job["source"] for _, job in prepared if job is not None]
        if sources:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.fp16):
                src = torch.from_numpy(np.stack(sources)).to(self.device, memory_format=self.layout)
                raw, blend = self.model.generate(src, ref_feat=self.ref_feat)
            raw_np = (raw.float().clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy()
            blend_np = blend.float()[:, 0].cpu().numpy()
        out, k = [], 0
        for frame, job in prepared:
            if job is None:
                out.append(frame)
                continue
            out.append(self._finish(job, raw_np[k], blend_np[k]))
            k += 1
        return out

    def _prepare(self, frame: np.ndarray, points: np.ndarray, target: np.ndarray) -> dict | None:
        drawable = self.warp.drawable(points, frame.shape)
        if drawable is None:
            return None
        box, face_px, feather = drawable
        x0, y0, x1, y1 = box
        a = window.window_affine(points, self.size)
        # Only the feathered lower face can change, and the prompt needs the window: work on the box
        # holding both (inside the warp's region box), not on the whole region or frame.
        fx0, fy0, fx1, fy1 = paste.lower_face_bounds(points, feather)
        wx0, wy0, wx1, wy1 = paste.window_box(a, self.size, frame.shape)
        bx0, by0 = max(min(fx0, wx0), x0), max(min(fy0, wy0), y0)
        bx1, by1 = min(max(fx1, wx1), x1), min(max(fy1, wy1), y1)
        work = (bx0, by0, bx1, by1)
        face = paste.lower_face_mask(points, work, feather)
        # The displacement field is smooth, and here it only places jaw and chin (the generator re-draws the
        # mouth): ~28 evaluations across the face height (14 px at 720p; the thin-plate evaluation was the
        # largest single cost of this half of the stage).
        step = max(GRID_STEP, round(face_px / 28))
        # The warp, which also moves chin and jaw skin, follows the opening rule at the target's opening; the
        # prompt's lip map carries the target's own lip shape, which the generator draws. Warping to
        # predicted lips directly dragged the chin with them (held-out eval: jaw LMD 6.35 vs 5.94, lip LMD
        # 4.26 vs 4.07, MOC 0.432 vs 0.456).
        warp_target = self.target_from_opening(points, float(L.mouth_opening(target)))
        moved = warp_target[MOVABLE, :2].astype(np.float64)
        map_x, map_y = self.warp.backward_map(points, np.array(MOVABLE), moved, box, step,
                                              (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0))
        # Cubic: a bilinear remap at fractional offsets takes the skin's fine detail (half its Laplacian
        # variance at half-pixel shifts).
        warped = cv2.remap(frame[y0:y1, x0:x1], map_x, map_y, cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REPLICATE)
        out = frame.copy()
        # warped · face + real · (1 − face), rounded to uint8 in one pass.
        out[by0:by1, bx0:bx1] = cv2.blendLinear(warped, frame[by0:by1, bx0:bx1], face, 1.0 - face)
        # The window sits where the *source* face is (stable landmarks), and is cut from the warped frame.
        win = window.crop(out, a, self.size)
        tw = window.apply(a, target[:, :2])
        source = prompt.source_input(win, tw)
        a_work = a.copy()
        a_work[:, 2] += a[:, :2] @ np.array([bx0, by0], np.float32)
        # The person's own lip colour in this light: the input frame's lips, before anything is drawn.
        own = paste.lip_lab(frame[by0:by1, bx0:bx1], paste.lip_band(points, work, -paste.LIP_ERODE))
        return {"out": out, "work": work, "face": face, "affine": a_work, "source": source, "target": tw,
                "target_px": target[:, :2], "own_lips": own}

    def _finish(self, job: dict, raw: np.ndarray, blend: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = job["work"]
        source = job["source"]
        window_rgb = source[:3].transpose(1, 2, 0) * 255.0  # the real pixels wherever the mask is 0
        out = job["out"]
        region = out[y0:y1, x0:x1]  # the warped lower face, written by _prepare
        patch = paste.paste_patch(region, raw, blend, source[3], window_rgb, job["affine"], job["face"])
        if patch is not None:
            (px0, py0, px1, py1), pixels = patch
            region[py0:py1, px0:px1] = np.clip(pixels + 0.5, 0, 255).astype(np.uint8)
        if job["own_lips"] is not None:
            paste.keep_lip_colour(region, job["target_px"], job["work"], job["own_lips"])
        if self.detail > 0:
            self.lip_detail.add(region, job["affine"], job["target"], self.detail)
        return out
