"""Renderer quality on held-out identities and render speed at 720p (issue 6). Results go into BENCHMARKS.md.

Quality — reversed-source self-reenactment on the held-out clips of lipdub/eval/eval_clips.json (never
trained on): output frame t is rendered from source frame N-1-t and asked for frame t's mouth (the true
opening, i.e. a perfect audio model; `dinet-lmk` gets frame t's lip/jaw landmarks aligned onto the source
pose, the richer input the audio model's lip shape will give). The ground truth is frame t aligned onto the
source pose. Per renderer: mouth-crop L1 / PSNR / SSIM (lipdub.eval.image mouth box, 96 px), seam score
and sharpness ratio (output vs the frame it was given), and from a face mesh of the output: lip and jaw LMD
against the truth, mouth-opening correlation (MOC) with the truth, lip jitter (vs the source's).
Pass-through (the source frame unchanged) is the baseline.

Speed — one frame of a held-out clip scaled to 1280x720; ms per frame of the renderer call (warp, paste-back
included) at 1 and 2 threads, and the whole render stage (`render_video`: decode, render, x264 encode):
frames/s and CPU ms per frame (this process; ffmpeg). `dinet-nodetail` is DINet without the detail layer
(`render/detail.py`).

Run: `python -m bench.bench_render [--weights W] [--seconds 3] [--enroll-clips 3]`; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import torch

from lipdub.face import landmarks as L

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def load_clip(corpus: Path, video: str, seconds: float, extra: float = 0.0
              ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """First `seconds` (+ `extra` for enrolment) of a clip at ≤480 px: frames, smoothed landmarks, validity."""
    from lipdub.face.mesh import FaceMesh
    from lipdub.render.dataset import decode_frames

    n = round((seconds + extra) * 25)
    frames, _ = decode_frames(corpus / video, set(range(n)))
    marks = np.zeros((len(frames), 478, 3), np.float32)
    valid = np.zeros(len(frames), bool)
    with FaceMesh() as mesh:
        for i, f in enumerate(frames):
            faces = mesh(f)
            if faces:
                marks[i], valid[i] = faces[0], True
    # Light zero-phase smoothing, like prep's, so landmark noise does not count as renderer jitter.
    smooth = marks.copy()
    inner = valid[:-2] & valid[1:-1] & valid[2:]
    smooth[1:-1][inner] = 0.25 * marks[:-2][inner] + 0.5 * marks[1:-1][inner] + 0.25 * marks[2:][inner]
    return frames, smooth, valid


class FramesTrack:
    """The parts of a SourceTrack that enrolment reads, over frames already in memory."""

    def __init__(self, directory: Path, frames: list[np.ndarray], landmarks: np.ndarray, valid: np.ndarray) -> None:
        self.dir, self.frames, self.landmarks, self.valid = directory, frames, landmarks, valid

    def reader(self) -> Self:
        return self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __getitem__(self, i: int) -> np.ndarray:
        return self.frames[i]


def mouth_crop(frame: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    from lipdub.eval.image import MOUTH_CROP, mouth_box

    x0, y0, x1, y1 = mouth_box(points, frame.shape)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return cv2.resize(frame[y0:y1, x0:x1], (MOUTH_CROP, MOUTH_CROP), interpolation=cv2.INTER_AREA)


def aligned_target(src_pts: np.ndarray, tgt_pts: np.ndarray, opening: float) -> np.ndarray:
    """Frame t's lip landmarks mapped onto the source pose (similarity on the stable points); the jaw follows
    the opening as for the other renderers (aligned jaw points of another frame carry pose noise)."""
    from lipdub.eval.lmd import align_to
    from lipdub.render.dinet_renderer import DinetRenderer

    out = DinetRenderer.target_from_opening(src_pts, opening).astype(np.float64)
    out[L.LIPS] = align_to(tgt_pts, src_pts)[L.LIPS]
    return out


def evaluate_clip(frames: list[np.ndarray], marks: np.ndarray, valid: np.ndarray, n: int,
                  renderers: dict[str, object]) -> dict[str, dict[str, float]]:
    from skimage.metrics import structural_similarity

    from lipdub.eval.image import ImageStats, align_frame, frame_metrics
    from lipdub.eval.lmd import landmark_distance, lip_jitter, mouth_opening_correlation
    from lipdub.face.mesh import FaceMesh
    from lipdub.render.dinet_renderer import DinetRenderer

    results: dict[str, dict[str, float]] = {}
    opening = L.mouth_opening(marks)
    for name, r in renderers.items():
        stats = ImageStats()
        l1s = []
        out_marks = np.zeros((n, 478, 3), np.float32)
        out_valid = np.zeros(n, bool)
        with FaceMesh() as mesh:
            for t in range(n):
                s = n - 1 - t
                if not (valid[s] and valid[t]):
                    continue
                src, sp = frames[s], marks[s]
                if name == "pass-through":
                    out = src
                elif name.startswith("dinet-lmk"):
                    assert isinstance(r, DinetRenderer)
                    out = r.render_batch([src], [sp], [aligned_target(sp, marks[t], float(opening[t]))])[0]
                else:
                    out = r(src, sp, float(opening[t]))  # type: ignore[operator]
                frame_metrics(stats, out, src, sp, gt=frames[t], gt_points=marks[t], rendered=name != "pass-through")
                oc = mouth_crop(out, sp)
                gc = mouth_crop(align_frame(frames[t], marks[t], sp), sp)
                if oc is not None and gc is not None:
                    l1s.append(float(np.abs(oc.astype(float) - gc.astype(float)).mean()))
                    stats.add(mouth_ssim_rgb=float(structural_similarity(oc, gc, channel_axis=2, data_range=255)))
                faces = mesh(out)
                if faces:
                    out_marks[t], out_valid[t] = faces[0], True
        res = stats.summary()
        res["mouth_l1"] = float(np.mean(l1s)) if l1s else float("nan")
        lmd = landmark_distance(out_marks, out_valid, marks[:n], valid[:n])
        res["lmd_lips"], res["lmd_jaw"] = lmd.lips, lmd.jaw
        gen_open = np.where(out_valid, L.mouth_opening(out_marks), np.nan)
        res["moc"] = mouth_opening_correlation(gen_open, np.where(valid[:n], opening[:n], np.nan))
        res["lip_jitter"] = lip_jitter(out_marks, out_valid)
        res["lip_jitter_source"] = lip_jitter(marks[:n], valid[:n])
        results[name] = res
    return results


def speed(frame: np.ndarray, points: np.ndarray, renderers: dict[str, object], n: int = 30) -> dict[str, float]:
    """ms per 720p frame of each renderer call (opening sweeps so every frame does real work)."""
    out = {}
    for name, r in renderers.items():
        r(frame, points, 0.3)  # type: ignore[operator]  # warm-up
        t = time.perf_counter()
        for i in range(n):
            r(frame, points, 0.1 + 0.4 * (i % 5) / 4)  # type: ignore[operator]
        out[name] = (time.perf_counter() - t) / n * 1000
    return out


def stage_speed(frame: np.ndarray, points: np.ndarray, renderer: object, n: int = 250) -> dict[str, float]:
    """The whole render stage (decode + render + encode) on an n-frame 720p source: frames/s (wall) and CPU
    ms per frame of this process (render, pipes) and of its ffmpeg children (decode, encode). On a shared
    machine the wall rate follows the load; the CPU times do not, and bound the rate on idle cores."""
    import resource

    from lipdub.audio.mouth import MouthTrack
    from lipdub.config import Settings
    from lipdub.media.video import VideoWriter
    from lipdub.prep.track import PREP_VERSION, SourceTrack, TrackSummary
    from lipdub.render.video import render_video
    from lipdub.timeline import Timeline

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        h, w = frame.shape[:2]
        with VideoWriter(d / "video.mp4", w, h) as vw:
            for _ in range(n):
                vw.write(frame)
        summary = TrackSummary(PREP_VERSION, w, h, n, 25, 1.0, float(np.ptp(points[:, 1])), 0.05)
        track = SourceTrack(d, summary, np.repeat(points[None], n, 0), np.ones(n, bool))
        mouth = MouthTrack((0.25 + 0.2 * np.sin(np.arange(n) / 3)).astype(np.float32), np.ones(n, bool))
        settings = Settings(data_dir=d / "var")
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        render_video(track, mouth, Timeline(n, n, "cut_off"), d / "out.mp4", settings, renderer=renderer)  # type: ignore[arg-type]
        wall = time.perf_counter() - t
        me2, kids2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)

        def cpu_ms(a: resource.struct_rusage, b: resource.struct_rusage) -> float:
            return (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) / n * 1000

        return {"fps": n / wall, "cpu_ms_python": cpu_ms(me, me2), "cpu_ms_ffmpeg": cpu_ms(kids, kids2)}


def main() -> None:
    from lipdub.render import packaged_weights
    from lipdub.render.dinet import load_checkpoint
    from lipdub.render.dinet_renderer import DinetRenderer
    from lipdub.render.prompt import select_references
    from lipdub.render.warp import WarpRenderer

    p = argparse.ArgumentParser()
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--weights", type=Path, default=packaged_weights())
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--enroll-clips", type=int, default=3)
    p.add_argument("--enroll-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lip-detail", type=float, default=0.0, help="also rate DINet with this lip-detail strength (default DETAIL)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--results", type=Path, default=None, help="per-clip JSON, reused when rerun")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from importlib import resources

    clips = json.loads(resources.files("lipdub.eval").joinpath("eval_clips.json").read_text())["clips"]
    model, extra = load_checkpoint(args.weights)
    report: dict[str, object] = {"weights": str(args.weights), "config": model.config.name,
                                 "train_step": extra.get("step"), "seconds": args.seconds}
    n = round(args.seconds * 25)
    enroll_seconds: list[float] = []

    def dinet_for(frames: list[np.ndarray], marks: np.ndarray, valid: np.ndarray, weights: Path
                  ) -> DinetRenderer:
        m, _ = load_checkpoint(weights)
        idx = select_references(L.mouth_opening(marks), valid, m.config.refs)
        return DinetRenderer(m, [(frames[i], marks[i]) for i in idx])

    per_clip = {}
    first = None
    if not args.skip_quality:
        done = json.loads(args.results.read_text()) if args.results and args.results.is_file() else {}
        for k, clip in enumerate(clips[: args.clips]):
            if clip["id"] in done:  # resumable: results of earlier runs (same weights) are kept
                per_clip[clip["id"]] = done[clip["id"]]
                continue
            enrol = k < args.enroll_clips
            frames, marks, valid = load_clip(args.corpus, clip["video"], args.seconds, 4.0 if enrol else 0.0)
            if first is None:
                first = (frames[0], marks[0])
            m = min(n, len(frames))  # short clips are evaluated whole
            if valid[:m].sum() < m // 2:
                continue
            ev = (frames[:m], marks[:m], valid[:m])
            renderers: dict[str, object] = {"pass-through": None, "warp": WarpRenderer(),
                                            "dinet": dinet_for(*ev, args.weights)}
            renderers["dinet-lmk"] = renderers["dinet"]
            plain = dinet_for(*ev, args.weights)
            plain.detail = 0.0  # the generator's own pixels only: what the references' lip detail adds
            renderers["dinet-nodetail"] = plain
            if args.lip_detail > 0:  # frame-resolution lip detail from the references (render/detail.py)
                lipped = dinet_for(*ev, args.weights)
                lipped.detail = args.lip_detail
                renderers["dinet-lipdetail"] = lipped
                renderers["dinet-lmk-lipdetail"] = lipped
            if enrol and len(frames) >= m + 40:
                # Per-source fine-tuning on the frames *after* the evaluated window (never the same frames).
                from lipdub.render.enroll import enroll

                tr = FramesTrack(Path(tempfile.mkdtemp(prefix="enrol-")), frames, marks, valid)
                t0 = time.perf_counter()
                tuned = enroll(tr, args.weights, args.enroll_steps, indices=np.arange(m, len(frames)))
                enroll_seconds.append(time.perf_counter() - t0)
                renderers["dinet-enrolled"] = dinet_for(*ev, tuned)
            res = evaluate_clip(*ev, m, renderers)
            per_clip[clip["id"]] = res
            if args.results:
                args.results.write_text(json.dumps(per_clip, indent=1))
            print(json.dumps({clip["id"]: {r: {k2: round(v, 3) for k2, v in m.items()} for r, m in res.items()}}),
                  flush=True)
        names = sorted({r for c in per_clip.values() for r in c})
        summary = {}
        for r in names:
            rows = [c[r] for c in per_clip.values() if r in c]
            keys = sorted({k for row in rows for k in row})
            summary[r] = {k: float(np.nanmean([row.get(k, np.nan) for row in rows])) for k in keys}
            summary[r]["clips"] = len(rows)
        report["quality"] = summary
        if enroll_seconds:
            report["enroll_seconds"] = enroll_seconds
    if args.skip_speed:
        print(json.dumps(report, indent=1, default=float))
        return
    # Speed at 720p.
    if first is None:
        frames, marks, valid = load_clip(args.corpus, clips[0]["video"], 0.2)
        first = (frames[0], marks[0])
    frame, pts = first
    scale = 720 / frame.shape[0]
    big = cv2.resize(frame, (round(frame.shape[1] * scale / 2) * 2, 720), interpolation=cv2.INTER_CUBIC)
    if big.shape[1] < 1280:  # pad to 1280 wide (speed depends on the face size, not on the background)
        pad = (1280 - big.shape[1]) // 2
        big = cv2.copyMakeBorder(big, 0, 0, pad, 1280 - big.shape[1] - pad, cv2.BORDER_REPLICATE)
        pts = pts.copy()
        pts[:, 0] += pad / scale
    bpts = (pts * scale).astype(np.float32)
    dinet = DinetRenderer(model, [(big, bpts)] * model.config.refs)
    spd: dict[str, dict[str, float] | dict[str, dict[str, float]]] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
        spd[f"call_ms_{threads}t"] = speed(big, bpts, {"warp": WarpRenderer(), "dinet": dinet})
        spd[f"stage_{threads}t"] = {"warp": stage_speed(big, bpts, WarpRenderer()),
                                   "dinet": stage_speed(big, bpts, dinet)}
    report["speed_720p"] = spd
    report["face_px_720p"] = float(np.ptp(bpts[L.FACE_OVAL, 1]))
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
