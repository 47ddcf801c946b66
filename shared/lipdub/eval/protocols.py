"""The evaluation protocols and the run over a set of clips.

- Ground truth: the original clip with its own audio (what real speech scores).
- Self-reenactment with a reversed source: dub the clip *played backwards* with its own soundtrack and
  compare the output with the original frame by frame. The reversed mouth carries no information about
  the audio, so copying the source mouth *in place* can't pass; the reversed clip itself is the
  pass-through baseline. But the truth of output frame t is source frame N−1−t: a renderer that draws
  from the source's own frames (references, exemplars, retrieved detail) is handed the very frame it must
  reproduce, and can score near-perfect by copying it (tests/test_eval_protocols.py shows it).
- Split clip: the clip's first half is the source, its second half's audio the dub audio and its second
  half's frames the truth. The truth frames are never in what the renderer is given, so copying source
  pixels gains nothing: the exclusion guard holds by construction. A renderer that reuses source pixels is
  judged on this protocol; the source half itself is the pass-through baseline.
- Cross-dubbing: dub the clip with another speech track (another language); sync and silence against that
  track, with the untouched clip (re-timed by the same sync-mode timeline) as baseline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lipdub import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from lipdub.audio.analyze import analyze_audio
from lipdub.config import Settings, SyncMode
from lipdub.errors import LipdubError
from lipdub.eval.image import ImageStats, frame_metrics
from lipdub.eval.lmd import landmark_distance, lip_jitter, mouth_opening_correlation
from lipdub.eval.picture import lip_colour, lip_colour_baseline
from lipdub.eval.progress import EvalProgress
from lipdub.eval.report import write_report
from lipdub.eval.results import ClipResult, DubAudio, EvalClip, EvalOptions, Signals
from lipdub.eval.sheets import SheetRows, crop_side, mouth_crop, sheet_frames
from lipdub.eval.signals import (
    audio_envelope,
    mouth_opening_signal,
    mouth_width_signal,
    silence_behaviour,
    voice_activity,
)
from lipdub.eval.sync import SyncResult, estimate_offset
from lipdub.eval.tracks import (
    VideoTrack,
    cut_audio,
    cut_frames,
    load_wav,
    open_25fps,
    prepare_clip,
    reverse_clip,
    track_video,
)
from lipdub.jobs import JobOptions
from lipdub.media.audio import save_wav
from lipdub.media.probe import probe
from lipdub.pipeline import dub
from lipdub.timeline import Timeline

CLIPS_FILE = Path(__file__).with_name("eval_clips.json")
# Settings that change what the pipeline outputs: recorded in the report so numbers can be traced.
PIPELINE_SETTINGS = {"renderer", "audio_model", "sync_mode", "video_crf", "video_tune", "device"}
SPLIT_MIN_FRAMES = 13  # half a second: a shorter half leaves the sync and landmark metrics nothing to use
LIP_BASELINE_S = 2.0  # the lip-colour baseline: the same person's lips this far apart


def load_eval_clips(corpus: Path, clips_file: Path = CLIPS_FILE) -> tuple[list[EvalClip], list[DubAudio]]:
    """The fixed evaluation set (eval_clips.json) resolved against a corpus directory."""
    spec = json.loads(clips_file.read_text())
    clips = [EvalClip(c["id"], corpus / c["video"], corpus / c["audio"] if c.get("audio") else None)
             for c in spec["clips"]]
    audios = [DubAudio(a["id"], corpus / a["audio"], a.get("language", "")) for a in spec["cross_dub_audios"]]
    return clips, audios


VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".mpg", ".mpeg", ".webm", ".m4v"}
AUDIO_SUFFIXES = {".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac"}


def discover_clips(videos: Path, quick: bool = False) -> list[EvalClip]:
    """Talking clips in a folder: videos with their own soundtrack, or a same-named audio file beside them.

    `quick` keeps the two shortest (CI). Videos without any soundtrack are skipped: no protocol can use them.
    """
    clips: list[tuple[float, EvalClip]] = []
    for path in sorted(p for p in videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES):
        sidecar = next((path.with_suffix(s) for s in sorted(AUDIO_SUFFIXES) if path.with_suffix(s).is_file()),
                       None)
        info = probe(path)
        if info.video is None or (info.audio is None and sidecar is None):
            continue
        clips.append((info.duration, EvalClip(path.stem, path, sidecar)))
    if quick:
        clips.sort(key=lambda c: c[0])
        clips = clips[:2]
    return [c for _, c in clips]


def discover_audios(audios: Path) -> list[DubAudio]:
    return [DubAudio(p.stem, p) for p in sorted(audios.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES]


def signal_metrics(mouth: np.ndarray, points: np.ndarray, valid: np.ndarray, envelope: np.ndarray,
                   speech: np.ndarray) -> tuple[dict, SyncResult]:
    """Sync, silence and jitter of one video (its landmarks) against one audio envelope."""
    sync = estimate_offset(mouth, envelope)
    out = {f"sync_{k}": v for k, v in sync.summary().items()}
    out.update(silence_behaviour(mouth, speech))
    out["lip_jitter"] = lip_jitter(points, valid)
    out["face_frames"] = int(valid.sum())
    return out, sync


def _duration_check(output: Path, dub_audio_seconds: float) -> dict:
    info = probe(output)
    video_s = info.video.duration if info.video else float("nan")
    audio_s = info.audio.duration if info.audio else float("nan")
    return {"duration_video_minus_audio_ms": (video_s - dub_audio_seconds) * 1000.0,
            "duration_muxed_audio_minus_audio_ms": (audio_s - dub_audio_seconds) * 1000.0}


class Evaluator:
    """Runs the protocols for one clip at a time; every intermediate file goes under `work_dir`."""

    def __init__(self, work_dir: Path, settings: Settings, options: EvalOptions,
                 progress: EvalProgress) -> None:
        self.work_dir, self.settings, self.options, self.progress = work_dir, settings, options, progress

    def _track(self, path: Path, label: str) -> VideoTrack:
        n = open_25fps(path)[2]
        with self.progress.stage(f"landmarks {label}", n) as advance:
            return track_video(path, advance)

    def _dub(self, video: Path, audio: Path, out: Path, mode: SyncMode) -> tuple[float | None, str | None]:
        start = time.perf_counter()
        try:
            dub(video, audio, out, self.settings, JobOptions.under(self.settings, sync_mode=mode),
                progress=self.progress)
        except LipdubError as exc:
            return None, f"[{exc.code}] {exc.message}"
        return time.perf_counter() - start, None

    def _audio_moc(self, audio: Path, work: Path, m_gt: np.ndarray) -> float:
        """The audio model's own predicted opening against the original's: the MOC a perfect renderer would
        keep, so a renderer's MOC can be read against it (issue 6 asks for within 0.05)."""
        mouth = analyze_audio(audio, work, self.settings)
        k = min(len(mouth), len(m_gt))
        return mouth_opening_correlation(mouth.opening[:k].astype(np.float64), m_gt[:k])

    def _images(self, out: VideoTrack, src_reader_track: VideoTrack, src_index: np.ndarray,
                gt: VideoTrack | None, label: str, rendered: bool = True,
                sheet: SheetRows | None = None) -> dict:
        """Stream output frame t, its source frame src_index[t] (and GT frame t) through the image metrics;
        a rendered output's own landmarks add the picture metrics. `sheet` collects contact-sheet crops."""
        stats = ImageStats()
        n = min(out.n_frames, len(src_index))
        frames = range(0, n, self.options.frame_stride)
        shown = set(sheet_frames(n)) if sheet is not None else set()
        side = crop_side(src_reader_track.landmarks, src_reader_track.valid)
        with out.reader() as out_r, src_reader_track.reader() as src_r, \
                (gt.reader() if gt is not None else _NullReader()) as gt_r, \
                self.progress.stage(f"images {label}", len(frames)) as advance:
            for t in sorted(set(frames) | shown):
                i = int(src_index[t])
                if src_reader_track.valid[i]:
                    src_points = src_reader_track.landmarks[i]
                    if sheet is not None and t in shown:
                        sheet.frames.append(t)
                        sheet.source.append(mouth_crop(src_r[i], src_points, side))
                        sheet.output.append(mouth_crop(out_r[t], src_points, side))
                    if t % self.options.frame_stride == 0:
                        gt_frame = gt_points = None
                        if gt is not None and t < gt.n_frames and gt.valid[t]:
                            gt_frame, gt_points = gt_r[t], gt.landmarks[t]
                        out_points = out.landmarks[t] if rendered and out.valid[t] else None
                        frame_metrics(stats, out_r[t], src_r[i], src_points, gt_frame, gt_points,
                                      rendered=rendered, out_points=out_points)
                if t % self.options.frame_stride == 0:
                    advance(1)
        return stats.summary()

    def _lip_colour_baseline(self, track: VideoTrack, label: str) -> float:
        """Median ΔE2000 of the clip's own mean lip colour LIP_BASELINE_S apart (what output-vs-source ΔE is
        read against)."""
        colours = np.full((track.n_frames, 3), np.nan)
        with track.reader() as reader, self.progress.stage(f"lip colour {label}", track.n_frames) as advance:
            for t in range(track.n_frames):
                if track.valid[t]:
                    lab = lip_colour(reader[t], track.landmarks[t])
                    if lab is not None:
                        colours[t] = lab
                advance(1)
        return lip_colour_baseline(colours, round(LIP_BASELINE_S * FPS))

    def _reenact(self, key: str, label: str, source: VideoTrack, truth: VideoTrack, wav: Path,
                 truth_metrics: dict, truth_sync: SyncResult, env: np.ndarray, speech: np.ndarray,
                 baseline_name: str, work: Path, sheet: SheetRows) -> tuple[dict, Signals]:
        """Dub `source` with `wav` (cut_off) and compare output frame t with truth frame t; the baseline is
        the source itself (its frames are the same number as the truth's)."""
        n = truth.n_frames
        m_truth = mouth_opening_signal(truth.landmarks, truth.valid)
        out_path = work / f"{key}.mp4"
        seconds, error = self._dub(source.path, wav, out_path, "cut_off")
        sig = Signals(env, speech, {"ground truth": m_truth}, {"ground truth": truth_sync})
        result: dict = {"dub_seconds": seconds, "error": error}
        m_src = mouth_opening_signal(source.landmarks, source.valid)
        base, base_sync = signal_metrics(m_src, source.landmarks, source.valid, env, speech)
        base.update(self._reference_metrics(source, m_src, truth, m_truth, truth_metrics, base_sync, truth_sync))
        base.update(self._images(source, source, np.arange(n), truth, f"{label} source", rendered=False))
        result["baseline"] = base
        sig.mouths[baseline_name] = m_src
        sig.curves[baseline_name] = base_sync
        if error is None:
            out = self._track(out_path, label)
            m_out = mouth_opening_signal(out.landmarks, out.valid)
            k = min(out.n_frames, n)
            res, sync = signal_metrics(m_out[:k], out.landmarks[:k], out.valid[:k], env[:k], speech[:k])
            res.update(self._reference_metrics(out, m_out, truth, m_truth, truth_metrics, sync, truth_sync))
            res.update(self._images(out, source, np.arange(out.n_frames), truth, label, sheet=sheet))
            res.update(_duration_check(out_path, len(load_wav(wav)) / SAMPLE_RATE))
            res["realtime_factor"] = (seconds or 0.0) / max(out.n_frames / FPS, 1e-6)
            res["audio_moc"] = self._audio_moc(wav, work / f"audio_{key}", m_truth)
            result["output"] = res
            sig.mouths["lipdub"] = m_out
            sig.curves["lipdub"] = sync
        return result, sig

    def _split(self, clip_id: str, clip_mp4: Path, gt: VideoTrack, samples: np.ndarray,
               work: Path, sheet: SheetRows) -> tuple[dict, Signals | None]:
        """Split clip: source = frames [0, h), audio and truth = frames [h, 2h) (h = half the clip)."""
        h = gt.n_frames // 2
        if h < SPLIT_MIN_FRAMES:
            return {"dub_seconds": None, "error": f"clip too short to split ({gt.n_frames} frames)",
                    "baseline": {}}, None
        first = cut_frames(clip_mp4, work / "input" / "first_half.mp4", 0, h)
        second = cut_frames(clip_mp4, work / "input" / "second_half.mp4", h, h)
        half = samples[h * SAMPLES_PER_FRAME: 2 * h * SAMPLES_PER_FRAME]
        wav = work / "input" / "second_half.wav"
        save_wav(wav, half)
        # The halves' landmarks are the whole clip's (same pixels, as for the reversed clip).
        source = VideoTrack(first, gt.width, gt.height, gt.landmarks[:h], gt.valid[:h])
        truth = VideoTrack(second, gt.width, gt.height, gt.landmarks[h:2 * h], gt.valid[h:2 * h])
        env = audio_envelope(half, h)
        speech = voice_activity(env)
        m_truth = mouth_opening_signal(truth.landmarks, truth.valid)
        truth_metrics, truth_sync = signal_metrics(m_truth, truth.landmarks, truth.valid, env, speech)
        result, sig = self._reenact("split_clip", f"{clip_id} split clip", source, truth, wav, truth_metrics,
                                    truth_sync, env, speech, "source half (baseline)", work, sheet)
        result["truth"] = truth_metrics  # the second half with its own audio: the split's ground truth
        result["half_frames"] = h
        return result, sig

    def run_clip(self, clip: EvalClip, dub_audios: list[DubAudio]) -> ClipResult:
        work = self.work_dir / clip.id
        opts = self.options
        clip_mp4, own_wav = prepare_clip(clip.video, work / "input", opts.max_seconds, clip.audio)
        gt = self._track(clip_mp4, f"{clip.id} original")
        n = gt.n_frames
        samples = load_wav(own_wav)
        env = audio_envelope(samples, n)
        speech = voice_activity(env)
        m_gt = mouth_opening_signal(gt.landmarks, gt.valid)
        gt_metrics, gt_sync = signal_metrics(m_gt, gt.landmarks, gt.valid, env, speech)
        gt_metrics["speech_fraction"] = float(speech.mean()) if n else float("nan")
        gt_metrics["lip_delta_e_2s"] = self._lip_colour_baseline(gt, f"{clip.id} original")
        self.progress.step_done(f"{clip.id}: ground truth")
        sheets = {"split clip": SheetRows(), "reversed source": SheetRows()}

        # Self-reenactment with the reversed source (its landmarks are the original's, reversed: same pixels).
        reversed_mp4 = reverse_clip(clip_mp4, work / "input" / "reversed.mp4")
        rev_index = np.arange(n)[::-1].copy()
        rev = VideoTrack(reversed_mp4, gt.width, gt.height, gt.landmarks[rev_index], gt.valid[rev_index])
        self_res, self_sig = self._reenact("self_reenactment", f"{clip.id} self-reenactment", rev, gt, own_wav,
                                           gt_metrics, gt_sync, env, speech, "reversed (baseline)", work,
                                           sheets["reversed source"])
        self.progress.step_done(f"{clip.id}: self-reenactment")

        split_res, split_sig = self._split(clip.id, clip_mp4, gt, samples, work, sheets["split clip"])
        self.progress.step_done(f"{clip.id}: split clip")

        crosses, cross_sigs = [], []
        for audio in dub_audios:
            sheet = sheets.setdefault(f"cross-dub {audio.id}", SheetRows())
            cross, sig = self._cross_dub(clip, audio, clip_mp4, gt, work, sheet)
            crosses.append(cross)
            cross_sigs.append(sig)
            self.progress.step_done(f"{clip.id}: cross-dub {audio.id}")
        return ClipResult(clip.id, n, gt_metrics, self_res, crosses, self_sig, cross_sigs,
                          split_clip=split_res, split_signals=split_sig, sheets=sheets)

    @staticmethod
    def _reference_metrics(video: VideoTrack, mouth: np.ndarray, gt: VideoTrack, m_gt: np.ndarray,
                           gt_metrics: dict, sync: SyncResult, gt_sync: SyncResult) -> dict:
        """Frame-by-frame comparison with the original clip (self-reenactment)."""
        lmd = landmark_distance(video.landmarks, video.valid, gt.landmarks, gt.valid)
        jitter_gt = gt_metrics["lip_jitter"]
        jitter = lip_jitter(video.landmarks, video.valid)
        width = mouth_width_signal(video.landmarks, video.valid)
        return {
            "lmd_lips": lmd.lips, "lmd_jaw": lmd.jaw, "lmd_frames": lmd.frames, "lmd_skipped": lmd.skipped,
            "moc": mouth_opening_correlation(mouth, m_gt),
            # Issue 26: the mouth's width (rounding, spreading) must follow the truth too, not only its opening.
            "width_corr": mouth_opening_correlation(width, mouth_width_signal(gt.landmarks, gt.valid)),
            "sync_offset_vs_gt": sync.offset - gt_sync.offset,
            "jitter_ratio_vs_gt": jitter / jitter_gt if jitter_gt else float("nan"),
        }

    def _cross_dub(self, clip: EvalClip, audio: DubAudio, clip_mp4: Path, gt: VideoTrack,
                   work: Path, sheet: SheetRows) -> tuple[dict, Signals]:
        opts = self.options
        dub_wav = work / "input" / f"dub_{audio.id}.wav"
        cut_audio(audio.path, dub_wav, opts.max_seconds)
        samples = load_wav(dub_wav)
        out_path = work / f"cross_{audio.id}.mp4"
        seconds, error = self._dub(clip_mp4, dub_wav, out_path, opts.cross_sync_mode)
        n_audio = int(np.ceil(len(samples) / (SAMPLE_RATE // FPS)))
        timeline = Timeline(gt.n_frames, n_audio, opts.cross_sync_mode)
        index = np.array([timeline.source_index(t) for t in range(timeline.n_out)], int)
        env = audio_envelope(samples, timeline.n_out)
        speech = voice_activity(env)
        result: dict = {"audio": audio.id, "language": audio.language, "dub_seconds": seconds, "error": error,
                        "speech_fraction": float(speech.mean()) if len(speech) else float("nan")}
        # Baseline: the untouched clip, re-timed by the same timeline (what the viewer would see without us).
        untouched = gt.take(index)
        m_base = mouth_opening_signal(untouched.landmarks, untouched.valid)
        base, base_sync = signal_metrics(m_base, untouched.landmarks, untouched.valid, env, speech)
        result["baseline"] = base
        sig = Signals(env, speech, {"untouched (baseline)": m_base}, {"untouched (baseline)": base_sync})
        if error is None:
            out = self._track(out_path, f"{clip.id} cross-dub {audio.id}")
            m_out = mouth_opening_signal(out.landmarks, out.valid)
            k = min(out.n_frames, len(env))
            res, sync = signal_metrics(m_out[:k], out.landmarks[:k], out.valid[:k], env[:k], speech[:k])
            res["jitter_ratio_vs_source"] = (res["lip_jitter"] / base["lip_jitter"]
                                             if base["lip_jitter"] else float("nan"))
            res.update(self._images(out, gt, index, None, f"{clip.id} cross-dub {audio.id}", sheet=sheet))
            res.update(_duration_check(out_path, len(samples) / SAMPLE_RATE))
            res["realtime_factor"] = (seconds or 0.0) / max(out.n_frames / FPS, 1e-6)
            result["output"] = res
            sig.mouths["lipdub"] = m_out
            sig.curves["lipdub"] = sync
        return result, sig


class _NullReader:
    """The reader of a missing ground truth: never read, since its frames are never valid."""

    def __enter__(self) -> _NullReader:
        return self

    def __getitem__(self, i: int) -> np.ndarray:
        raise IndexError(i)

    def __exit__(self, *exc: object) -> None:
        return None


def run_evaluation(clips: list[EvalClip], dub_audios: list[DubAudio], out_dir: Path, settings: Settings,
                   options: EvalOptions | None = None, cross_per_clip: int = 1,
                   quiet: bool = False) -> list[ClipResult]:
    """All protocols on every clip; clip i is cross-dubbed with `cross_per_clip` audios chosen round-robin.

    Writes report.json, report.md, plots/ and sheets/ into `out_dir` (see lipdub.eval.report).
    """
    options = options or EvalOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    pairs = []
    for i, clip in enumerate(clips):
        chosen = [dub_audios[(i * cross_per_clip + j) % len(dub_audios)]
                  for j in range(min(cross_per_clip, len(dub_audios)))] if dub_audios else []
        pairs.append((clip, chosen))
    total = sum(3 + len(chosen) for _, chosen in pairs)
    results: list[ClipResult] = []
    started = time.perf_counter()
    with EvalProgress(total, quiet) as progress:
        evaluator = Evaluator(work, settings, options, progress)
        for clip, chosen in pairs:
            progress.describe(clip.id)
            try:
                results.append(evaluator.run_clip(clip, chosen))
            except LipdubError as exc:
                progress.log(f"[yellow]skipped[/] {clip.id}: [{exc.code}] {exc.message}")
    pipeline = {k: str(v) for k, v in settings.model_dump().items() if k in PIPELINE_SETTINGS}
    write_report(results, out_dir, options, time.perf_counter() - started, pipeline)
    return results
