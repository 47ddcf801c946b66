"""render: re-draw the mouth of every output frame; faceless frames pass through unchanged.

Renderers take a frame, its landmarks and a target mouth opening (`Renderer`). A renderer that also takes
full target landmark sets in batches (`BatchRenderer`, the DINet renderer) gets the audio model's predicted
lip shapes (`render.lips.LipTargets`, when the mouth track has them) and up to `batch` frames per call, in
two halves: `prepare` (warp and prompt) runs for the next batch while a second thread runs `finish`
(generator, paste-back) on the last one and hands it to the encoder, so the two halves share the cores.
At most two batches of decoded frames are held at any time, so memory stays constant whatever the video's
length.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from lipdub.audio.mouth import MouthTrack
from lipdub.config import Settings
from lipdub.device import resolve_device
from lipdub.media.video import VideoWriter
from lipdub.prep.track import SourceTrack
from lipdub.progress import SILENT, Progress
from lipdub.render import make_renderer
from lipdub.render.lips import LipTargets
from lipdub.render.protocols import BatchRenderer, CountsUnmatched, Rendered, Renderer
from lipdub.timeline import Timeline


def render_video(track: SourceTrack, mouth: MouthTrack, timeline: Timeline, out: Path, settings: Settings,
                 frames: range | None = None, renderer: Renderer | None = None,
                 progress: Progress = SILENT) -> Rendered:
    """Encode output frames `frames` (default: all) to a silent H.264 file; returns the frames passed through
    (the source's own: no usable face, or outside the timeline's dub ranges) and those drawn without a
    mouth of the target's shape.

    Each shot of the source (lipdub.prep.shots) gets its own renderer, built from that shot's references,
    neutral face and rest opening (`SourceTrack.for_shot`); `renderer`, when given, serves every shot."""
    frames = frames if frames is not None else range(timeline.n_out)
    device = resolve_device(settings.device)
    shots = ShotRenderers(track, mouth, lambda view: renderer or make_renderer(view, settings, device))
    passed = 0
    s = track.summary
    # Frames in output order, each with its job (landmarks, opening, audio frame, source frame, dub weight) if
    # re-drawn; the jobs of one batch are all of one shot (`batch_shot`), as a renderer holds one shot's
    # references.
    pending: list[tuple[np.ndarray, tuple[np.ndarray, float, int | None, int, float] | None]] = []
    batch_shot = 0
    # One BLAS thread: the renderers' BLAS calls are tiny (the warp's RBF over ~100 points), and OpenBLAS's
    # idle workers spin in sched_yield between them, which took half this process's CPU from the
    # decoder and encoder beside it (720p DINet: 35 -> 18 ms of CPU a frame).
    with threadpool_limits(limits=1, user_api="blas"), track.reader_at(timeline.rate) as reader, \
            VideoWriter(out, s.width, s.height, settings.video_crf, settings.video_preset,
                        rate=timeline.rate, tune=settings.video_tune) as writer, \
            progress.stage("render", len(frames)) as advance, \
            ThreadPoolExecutor(1, thread_name_prefix="render-finish") as pool:
        inflight: tuple[Future[None], int] | None = None

        def finish_and_write(batched: BatchRenderer, frames_out: list[np.ndarray], keys: list[int],
                             weights: list[float], prepared: list[Any]) -> None:
            for k, w, frame in zip(keys, weights, batched.finish(prepared), strict=True):
                frames_out[k] = fade(frames_out[k], frame, w)
            for frame in frames_out:
                writer.write(frame)

        def wait() -> None:
            nonlocal inflight
            if inflight is not None:
                done, n = inflight
                inflight = None
                done.result()  # re-raises what went wrong in the finishing thread
                advance(n)

        def flush() -> None:
            nonlocal inflight
            todo = [(k, frame, job) for k, (frame, job) in enumerate(pending) if job is not None]
            frames_out = [frame for frame, _ in pending]
            shot_renderer, lips, _ = shots.get(batch_shot) if todo else (None, None, 0.0)
            if isinstance(shot_renderer, BatchRenderer):
                batched = shot_renderer
                targets = [batched.target(p, o, lips(i, a) if lips is not None else None)
                           for _, _, (p, o, a, i, _) in todo]
                prepared = batched.prepare([f for _, f, _ in todo], [j[0] for _, _, j in todo], targets)
                wait()  # the last batch is encoded before this one: output order, two batches at most
                inflight = (pool.submit(finish_and_write, batched, frames_out, [k for k, _, _ in todo],
                                        [j[4] for _, _, j in todo], prepared), len(frames_out))
            else:
                wait()
                for k, frame, (p, o, _, _, w) in todo:
                    assert shot_renderer is not None
                    frames_out[k] = fade(frame, shot_renderer(frame, p, o), w)
                for frame in frames_out:
                    writer.write(frame)
                advance(len(frames_out))
            pending.clear()

        jobs = 0  # frames to re-draw among the pending ones
        for t in frames:
            k = timeline.source_index(t)  # the source frame shown, at the output rate
            frame = reader[k]
            # At the source's own rate (not 25 fps) a frame falls between two of the 25-fps tracks: its
            # landmarks and mouth opening are interpolated, the rest taken from the nearer frame.
            position = timeline.track_position(k)
            i = track.nearest(position)
            weight = timeline.dub_weight(t)
            if track.valid[i] and weight > 0:
                shot = int(track.shot[i]) if track.shot is not None else 0
                if shot != batch_shot and jobs:
                    flush()
                    jobs = 0
                batch_shot = shot
                jobs += 1
                heard = timeline.track_position(t)
                a = min(round(heard), len(mouth.opening) - 1) if timeline.audio_index(t) is not None else None
                motion = interpolate(mouth.opening, heard) if a is not None else 0.0  # at rest past the dub's end
                pending.append((frame, (track.landmarks_at(position), shots.rest_opening(shot) + motion, a, i,
                                        weight)))
            else:
                passed += 1
                pending.append((frame, None))
            # A shot's renderer is made only for frames to re-draw: a shot without a face has none to make.
            if len(pending) >= (shots.batch_size(batch_shot) if jobs else PASS_THROUGH_BATCH):
                flush()
                jobs = 0
        flush()
        wait()
    return Rendered(passed, shots.unmatched())


PASS_THROUGH_BATCH = 16  # frames written at a time while none is re-drawn


def interpolate(values: np.ndarray, position: float) -> float:
    """values[position] for a fractional position (linear; clamped to the ends)."""
    i0 = min(max(0, int(position)), len(values) - 1)
    i1 = min(i0 + 1, len(values) - 1)
    frac = min(max(position - i0, 0.0), 1.0)
    return float((1 - frac) * values[i0] + frac * values[i1])


def fade(source: np.ndarray, dubbed: np.ndarray, weight: float) -> np.ndarray:
    """The dubbed frame, or at the edge of a dub range its blend with the source frame."""
    return dubbed if weight >= 1 else cv2.addWeighted(dubbed, weight, source, 1 - weight, 0)


class ShotRenderers:
    """The renderer (and lip targets) of each shot, made when first needed; a few are kept, since the
    timeline's loop and bounce modes come back to earlier shots."""

    KEEP = 4

    def __init__(self, track: SourceTrack, mouth: MouthTrack, make: Callable[[SourceTrack], Renderer]) -> None:
        self.track, self.mouth, self.make = track, mouth, make
        self.made: dict[int, tuple[Renderer, LipTargets | None, float]] = {}
        self.dropped_unmatched = 0  # `unmatched` of the renderers let go

    def get(self, shot: int) -> tuple[Renderer, LipTargets | None, float]:
        """The shot's renderer, lip targets (batch renderers) and rest opening."""
        if shot not in self.made:
            if len(self.made) >= self.KEEP:
                dropped = self.made.pop(next(iter(self.made)))[0]
                self.dropped_unmatched += dropped.unmatched if isinstance(dropped, CountsUnmatched) else 0
            view = self.track.for_shot(shot)
            renderer = self.make(view)
            lips = LipTargets.for_track(view, self.mouth) if isinstance(renderer, BatchRenderer) else None
            self.made[shot] = (renderer, lips, view.summary.rest_opening)
        return self.made[shot]

    def unmatched(self) -> int:
        """Frames the shots' renderers drew without a mouth of the target's shape, so far."""
        return self.dropped_unmatched + sum(r.unmatched for r, _, _ in self.made.values()
                                            if isinstance(r, CountsUnmatched))

    def rest_opening(self, shot: int) -> float:
        return self.get(shot)[2]

    def batch_size(self, shot: int) -> int:
        renderer, _, _ = self.get(shot)
        return max(1, renderer.batch) if isinstance(renderer, BatchRenderer) else 1
