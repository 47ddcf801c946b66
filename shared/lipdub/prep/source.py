"""prep: normalise the source video and turn it into a reusable source track at 25 fps.

One streaming pass: ffmpeg writes `video.mp4` (constant 25 fps, upright, even-sized H.264; remuxed when
the source already qualifies), or `native.mp4` at the source's own constant rate when it is not 25 fps
(its 25-fps frames picked by `media.video.retime_index`, so the output can keep the source's rate), and
hands small 25-fps analysis frames to the face tracker. Then, on landmarks only: target-face choice (the
soundtrack's speaker among several faces: lipdub.prep.speaker), quality gate, head pose, jitter removal,
crop boxes, mouth opening, reference frames and the speaker's neutral mouth. Writes the video, `track.npz`
and `track.json` into `out_dir` (see lipdub.prep.track). Use lipdub.prep.cache.prepare_cached to prep each
source only once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipdub import FPS
from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.face import landmarks as L
from lipdub.media.probe import MediaInfo, packet_times, probe
from lipdub.media.video import Normalization, NormalizingStream, plan_normalization, source_timeline
from lipdub.prep import gate, speaker
from lipdub.prep.analysis import FaceAnalysis, analyze_faces
from lipdub.prep.pose import Pose, fit_pose
from lipdub.prep.shots import person_distance, shot_ids
from lipdub.prep.smoothing import _smooth, runs, smooth_landmarks
from lipdub.prep.speaker import soundtrack, speech_opening
from lipdub.prep.track import NATIVE_VIDEO, PREP_VERSION, VIDEO, SourceTrack, TrackSummary
from lipdub.prep.tracking import Target, candidate_tracks, pick_by_target, track_score
from lipdub.progress import SILENT, Progress

__all__ = ["PREP_VERSION", "SourceTrack", "Target", "TrackSummary", "prepare_source"]

N_REFERENCES = 5
CROP_MARGIN = 1.2  # crop side = margin · larger side of the face-oval box (DH_live's crop_face rule)
CROP_SIGMA = 3.0  # frames: the crop box moves more calmly than the face


@dataclass
class Assembled:
    """The target face's per-frame data, before it is written anywhere."""

    verdict: gate.Verdict
    summary: TrackSummary
    arrays: dict[str, np.ndarray]


def check_length(info: MediaInfo, settings: Settings) -> None:
    """Fail fast (before decoding) when the source is obviously too short."""
    duration = max(info.video.duration if info.video else 0.0, info.duration)
    if duration > 0 and round(duration * FPS) < settings.min_video_frames - 1:
        raise InputError(ErrorCode.video_too_short, f"{info.path.name}: {duration:.2f} s; at least "
                                                    f"{settings.min_video_frames} frames at {FPS} fps are needed")


def prepare_source(video: Path, out_dir: Path, settings: Settings, progress: Progress = SILENT,
                   target: Target | None = None) -> SourceTrack:
    """Prep `video` into `out_dir`; raises InputError with a gate code when the source can't be dubbed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe(video)
    check_length(info, settings)
    packets = packet_times(video)  # raises unsupported_video when ffprobe can't read them
    plan = plan_normalization(info, settings.max_height, settings.prep_analysis_height, packets)
    estimate = max(1, round(max(info.duration, info.video.duration if info.video else 0) * FPS))
    stream = NormalizingStream(video, out_dir / (NATIVE_VIDEO if plan.native_rate else VIDEO), plan)
    try:
        with progress.stage("prep", estimate) as advance:
            faces = analyze_faces(stream, plan.width, plan.height, round(settings.face_track_gap_s * FPS), advance)
        n = stream.finish()
    except BaseException:
        stream.abort()
        raise
    source_index, source_time = source_timeline(packets.pts, n)
    result = assemble(video.name, faces, plan, info, settings, target,
                      (lambda: soundtrack(video)) if info.audio is not None else None)
    result.verdict.raise_for_code()
    if plan.native_rate is not None:
        result.summary.native_frames = stream.written
    track = SourceTrack(out_dir, result.summary, source_index=source_index, source_time=source_time,
                        **result.arrays)
    track.save()
    return track


def assemble(name: str, faces: FaceAnalysis, plan: Normalization, info: MediaInfo, settings: Settings,
             target: Target | None, speech: Callable[[], np.ndarray | None] | None = None) -> Assembled:
    """Choose the target face, judge the source, and derive everything the track holds. `speech` gives the
    source's own soundtrack (16 kHz), which picks the talking face when several are equally prominent."""
    n, width, height = faces.n_frames, plan.width, plan.height
    summary = TrackSummary(PREP_VERSION, width, height, n, FPS, 0.0, 0.0, 0.0, normalization=list(plan.changes),
                           source=source_facts(info), native_rate=plan.native_rate)
    if n < settings.min_video_frames:
        return Assembled(gate.judge(name, n, np.zeros(n, bool), np.zeros(n, np.uint8), np.zeros(n), settings),
                         summary, {})
    candidates = candidate_tracks(faces.tracker.tracks, settings.min_video_frames)
    summary.n_faces = len(candidates)
    if not candidates:
        return Assembled(gate.Verdict(ErrorCode.no_face, f"{name}: no face was found"), summary, {})
    # What the source's own speech says about its faces (prep.speaker): who talks, and when.
    samples = speech() if speech is not None and len(candidates) > 1 else None
    heard = speech_opening(samples) if samples is not None else None
    if target is not None:
        assert info.video is not None
        chosen = pick_by_target(candidates, target.scaled(width / info.video.display_size[0]))
        if chosen is None:
            return Assembled(gate.Verdict(ErrorCode.no_face, f"{name}: no face at the chosen point/box "
                                                             f"at {target.time:.2f} s"), summary, {})
        summary.target_source = "user"
    else:
        scores = {t.id: track_score(t, n, width, height) for t in candidates}
        ranked = sorted(candidates, key=lambda t: -scores[t.id])
        chosen = ranked[0]
        if len(ranked) > 1:
            # The source's own speech decides between faces: among tied ones, or over a dominant face whose
            # lips do not follow it while another's clearly do (a listener in the foreground).
            best, second = scores[ranked[0].id], scores[ranked[1].id]
            tied = [t for t in ranked if best < settings.face_dominance * scores[t.id]]
            vote = speaker.vote(tied if len(tied) > 1 else ranked, heard) if heard is not None else None
            if vote is not None and vote.chosen is not None and (len(tied) > 1 or vote.chosen is not chosen):
                if len(tied) == 1:
                    summary.flags.append("dominant_face_silent")  # it gave way to the speaker
                chosen = vote.chosen
                summary.target_source = "speaker"
                summary.flags.append("active_speaker_chosen")
            elif len(tied) > 1:
                return Assembled(gate.multiple_faces(name, len(ranked), best, second, vote), summary, {})
            else:
                summary.flags.append("multiple_faces_dominant_chosen")
    if heard is not None:
        # Lines another face speaks get dubbed onto this one: the report says where, for `ranges`.
        summary.other_speaker = [[t.start, t.end] for t in speaker.turns(candidates, heard) if t.face != chosen.id]
    summary.target_id = chosen.id
    present = np.zeros(n, bool)
    raw = np.zeros((n, 478, 3), np.float32)
    present[chosen.frames] = True
    for frame, points in zip(chosen.frames, chosen.landmarks):
        raw[frame] = points
    for track in faces.tracker.tracks:  # the landmarks now live in `raw`: free the per-track copies
        track.landmarks.clear()
    full = fit_pose(raw, present)
    angles = np.zeros((n, 3))
    angles[present] = full.angles()[present]
    face_px = np.where(present, np.ptp(raw[:, L.FACE_OVAL, :2], axis=1).max(axis=1), 0.0)
    flags = gate.frame_flags(present, angles, face_px, settings)
    verdict = gate.judge(name, n, present, flags, face_px, settings)
    summary.face_coverage = float(present.mean())
    summary.face_px = float(np.median(face_px[present]))
    if not verdict.ok:
        return Assembled(verdict, summary, {})
    cuts = faces.cuts
    landmarks, smooth_pose = smooth_landmarks(raw, full, present, cuts)
    del raw
    valid = flags == 0
    angles_s = np.zeros((n, 3))
    angles_s[present] = smooth_pose.angles()[present]
    opening = np.zeros(n, np.float32)
    opening[present] = L.mouth_opening(landmarks)[present]
    rest = float(np.percentile(opening[valid], 10)) if valid.any() else 0.0
    # The renderer's references, neutral face and rest opening come from each shot's own frames: after a cut
    # the face may be another person's (the tracker continues the track with the next shot's main face).
    shot = shot_ids(cuts, n)
    in_shot = [valid & (shot == k) for k in range(int(shot[-1]) + 1)]
    refs = np.sort(np.concatenate([reference_frames(opening, usable) for usable in in_shot])).astype(np.int32)
    shot_rest = np.array([np.percentile(opening[usable], 10) if usable.any() else rest for usable in in_shot],
                         np.float32)
    neutral = np.stack([neutral_shape(landmarks, smooth_pose, opening, usable) for usable in in_shot])
    main = int(np.argmax([usable.sum() for usable in in_shot]))
    summary.rest_opening = rest
    summary.cuts = cuts
    summary.shot_person_distance = [round(person_distance(neutral[main], face), 4) if usable.any() else None
                                    for face, usable in zip(neutral, in_shot, strict=True)]
    summary.usable_share = float(valid.mean())
    summary.pass_through = int((~valid).sum())
    summary.yaw, summary.pitch = distribution(angles_s[present, 0]), distribution(angles_s[present, 1])
    summary.reference_frames = refs.tolist()
    if (flags & gate.NOT_FRONTAL).any():
        summary.flags.append("brief_turns_passed_through")
    if (flags & gate.NO_FACE).any():
        summary.flags.append("faceless_frames_passed_through")
    arrays = {
        "landmarks": landmarks, "valid": valid, "present": present, "frame_flags": flags,
        "rotation": smooth_pose.rotation.astype(np.float32), "translation": smooth_pose.translation.astype(np.float32),
        "scale": smooth_pose.scale.astype(np.float32), "angles": angles_s.astype(np.float32),
        "crop": crop_boxes(landmarks, present, width, height, cuts), "mouth_opening": opening,
        "reference_frames": refs, "shot": shot, "shot_rest_opening": shot_rest,
        "neutral_shape": neutral,
    }
    return Assembled(verdict, summary, arrays)


def source_facts(info: MediaInfo) -> dict[str, object]:
    v = info.video
    if v is None:
        return {}
    return {"width": v.width, "height": v.height, "fps": round(v.fps, 3), "rotation": v.rotation,
            "codec": v.codec, "duration": round(max(v.duration, info.duration), 3),
            "variable_frame_rate": v.variable_frame_rate}


def distribution(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p5, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"p5": round(float(p5), 2), "p50": round(float(p50), 2), "p95": round(float(p95), 2),
            "max_abs": round(float(np.abs(values).max()), 2)}


def reference_frames(opening: np.ndarray, valid: np.ndarray, k: int = N_REFERENCES) -> np.ndarray:
    """`k` usable frames with diverse mouth openings from the more open half (as DH_live picks its
    references): evenly spaced quantiles of the opening among frames above the median."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return np.zeros(0, np.int32)
    order = idx[np.argsort(opening[idx], kind="stable")]
    upper = order[len(order) // 2:]
    picks = upper[np.unique(np.linspace(0, len(upper) - 1, min(k, len(upper))).round().astype(int))]
    return np.sort(picks).astype(np.int32)


def neutral_shape(landmarks: np.ndarray, pose: Pose, opening: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The speaker's face at rest in canonical space: mean pose-normalised shape over the most closed-mouth
    tenth of the usable frames (the identity's neutral mouth for the renderer)."""
    idx = np.flatnonzero(valid)
    if idx.size == 0:
        return np.zeros((478, 3), np.float32)
    closed = idx[opening[idx] <= np.percentile(opening[idx], 10)]
    at_rest = Pose(pose.rotation[closed], pose.translation[closed], pose.scale[closed])
    return at_rest.to_canonical(landmarks[closed]).mean(0).astype(np.float32)


def crop_boxes(landmarks: np.ndarray, present: np.ndarray, width: int, height: int,
               cuts: Sequence[int] = ()) -> np.ndarray:
    """Square face box per frame (x0, y0, x1, y1), clipped to the frame: centred on the face oval, side
    CROP_MARGIN · its larger side, centre and side smoothed over time (within a shot) so the crop never
    shakes."""
    boxes = np.zeros((len(landmarks), 4), np.int32)
    oval = landmarks[:, L.FACE_OVAL, :2]
    lo, hi = oval.min(1), oval.max(1)
    centre = (lo + hi) / 2
    side = CROP_MARGIN * (hi - lo).max(1)
    for run in runs(present, cuts):
        c, s = _smooth(centre[run], CROP_SIGMA), _smooth(side[run], CROP_SIGMA)
        x0, y0 = c[:, 0] - s / 2, c[:, 1] - s / 2
        boxes[run] = np.stack([np.clip(x0, 0, width), np.clip(y0, 0, height),
                               np.clip(x0 + s, 0, width), np.clip(y0 + s, 0, height)], 1).round()
    return boxes
