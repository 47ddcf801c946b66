"""End to end: dub a generated talking-head clip with espeak-ng speech and check the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lipdub import FPS, SAMPLES_PER_FRAME
from lipdub.face import landmarks as L
from lipdub.face.mesh import FaceMesh
from lipdub.jobs import JobOptions
from lipdub.media.audio import load_audio
from lipdub.media.probe import probe
from lipdub.media.video import FrameReader, VideoWriter, count_frames
from lipdub.pipeline import dub
from lipdub.timeline import Timeline


def options(**given: object) -> JobOptions:
    """Job options, the rest with the defaults of the environment's settings (get_settings)."""
    return JobOptions.model_validate(given)


def envelope(samples: np.ndarray, n: int) -> np.ndarray:
    """log-RMS of the 40 ms around each 25-fps frame."""
    pad = np.pad(samples, (SAMPLES_PER_FRAME // 2, SAMPLES_PER_FRAME * 2))
    frames = np.stack([pad[i * SAMPLES_PER_FRAME: (i + 1) * SAMPLES_PER_FRAME] for i in range(n)])
    return np.log(np.sqrt((frames**2).mean(1)) + 1e-4)


def read_all(path: Path) -> list[np.ndarray]:
    info = probe(path)
    assert info.video is not None
    with FrameReader(path, info.video.width, info.video.height, count_frames(path)) as reader:
        return list(reader)


@pytest.fixture(scope="module")
def dubbed(demo_inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    from lipdub.config import Settings

    video, audio = demo_inputs
    work = tmp_path_factory.mktemp("dub")
    out = work / "out.mp4"
    result = dub(video, audio, out, Settings(data_dir=work / "var"), options(sync_mode="bounce"))
    return video, audio, out, result


def test_output_format_and_duration(dubbed) -> None:
    _, audio, out, result = dubbed
    info, audio_info = probe(out), probe(audio)
    assert info.video is not None and info.audio is not None
    assert info.video.codec == "h264" and info.audio.codec == "aac"
    assert info.video.fps == pytest.approx(FPS)
    assert abs(info.duration - audio_info.duration) <= 1 / FPS
    assert count_frames(out) == result.frames
    assert result.passed_through == 0


def test_mouth_moves_with_the_speech_and_nothing_else_changes(dubbed, tmp_path: Path) -> None:
    from lipdub.audio.analyze import analyze_audio
    from lipdub.config import Settings

    video, audio, out, result = dubbed
    frames = read_all(out)
    source = read_all(video)  # already 25-fps H.264: prep uses it as is
    timeline = Timeline(len(source), result.frames, "bounce")
    # What the audio stage asks the renderer for (the default model, as the pipeline used it).
    mouth = analyze_audio(audio, tmp_path / "audio", Settings(data_dir=tmp_path / "var"))
    assert len(mouth) == result.frames

    measured: list[float] = []
    face_boxes = []
    with FaceMesh() as mesh:
        for frame in frames:
            faces = mesh(frame)
            assert faces, "the face must stay detectable in every dubbed frame"
            measured.append(float(L.mouth_opening(faces[0])))
            face_boxes.append(faces[0][L.FACE_OVAL, :2])
    opening = np.array(measured)
    # The rendered mouth follows the audio model's target (best lag within ±2 frames)...
    def best_r(a: np.ndarray, b: np.ndarray) -> float:
        return max(np.corrcoef(a[max(0, -k): len(a) - max(0, k)], b[max(0, k): len(b) - max(0, -k)])[0, 1]
                   for k in range(-2, 3))

    r_target = best_r(opening, mouth.opening)
    assert r_target > 0.6, f"rendered mouth vs audio model target r={r_target:.2f}"
    # ...which is driven by the speech: open while speaking, closed in the pauses and after the dub.
    env = envelope(load_audio(audio), len(frames))
    speaking = env > np.percentile(env, 60)
    pauses = env < np.percentile(env, 15)
    assert opening[speaking].mean() - opening[pauses].mean() > 0.04, (
        f"opening while speaking {opening[speaking].mean():.2f} vs in pauses {opening[pauses].mean():.2f}")
    r_env = best_r(opening, env)
    assert r_env > 0.2, f"rendered mouth vs loudness envelope r={r_env:.2f}"
    assert opening.max() - opening.min() > 0.2

    # Pixels away from the face are the source's, within encoding tolerance.
    diffs, mouth_diffs = [], []
    for t, frame in enumerate(frames):
        src = source[timeline.source_index(t)]
        lo, hi = face_boxes[t].min(0), face_boxes[t].max(0)
        far = np.ones(frame.shape[:2], bool)
        pad = 0.5 * (hi - lo)
        y0, x0 = np.maximum((lo - pad)[::-1].astype(int), 0)
        y1, x1 = (hi + pad)[::-1].astype(int)
        far[y0:y1, x0:x1] = False
        delta = np.abs(frame.astype(int) - src.astype(int))
        diffs.append(delta[far].mean())
        mx0, my0 = face_boxes[t][:, 0].min(), face_boxes[t][:, 1].max() - 0.45 * (hi - lo)[1]
        mouth_px = delta[int(my0): int(hi[1]), int(mx0): int(hi[0])]
        mouth_diffs.append(mouth_px.mean())
    # One CRF-18 re-encode of the textured portrait moves pixels by ~2 grey levels on average.
    assert max(diffs) < 3.0, f"pixels far from the face changed by {max(diffs):.2f} grey levels"
    assert np.mean(mouth_diffs) > 2 * np.mean(diffs), "the mouth region must change far more than the rest"


def test_face_less_stretch_passes_through(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    from lipdub.config import Settings

    video, audio = demo_inputs
    frames = read_all(video)[:75]
    gap = range(30, 45)
    patched = tmp_path / "gap.mp4"
    h, w = frames[0].shape[:2]
    with VideoWriter(patched, w, h) as writer:
        for i, frame in enumerate(frames):
            writer.write(np.full_like(frame, 128) if i in gap else frame)
    result = dub(patched, audio, tmp_path / "out.mp4", Settings(data_dir=tmp_path / "var"),
                 options(sync_mode="cut_off"))
    assert result.frames == 75
    assert result.passed_through == len(gap)


def test_only_the_given_ranges_are_reanimated(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    from lipdub.config import Settings

    video, audio = demo_inputs
    out = tmp_path / "out.mp4"
    result = dub(video, audio, out, Settings(data_dir=tmp_path / "var"),
                 options(sync_mode="cut_off", ranges=((1.0, 2.0),)))  # output frames 25..49
    frames, source = read_all(out), read_all(video)
    assert result.passed_through == result.outside_ranges == result.frames - 25
    with FaceMesh() as mesh:
        faces = mesh(source[0])
    lo, hi = faces[0][L.FACE_OVAL, :2].min(0), faces[0][L.FACE_OVAL, :2].max(0)
    y0, x0 = int(hi[1] - 0.45 * (hi - lo)[1]), int(lo[0])  # the lower face, where the mouth is re-drawn
    change = np.array([np.abs(f[y0:int(hi[1]), x0:int(hi[0])].astype(int)
                              - s[y0:int(hi[1]), x0:int(hi[0])].astype(int)).mean()
                       for f, s in zip(frames, source[:len(frames)], strict=True)])
    outside = np.r_[change[:25], change[50:]]
    assert outside.max() < 3.0, f"frames outside the range changed by {outside.max():.2f} grey levels"
    inside = change[30:45]  # past the fades
    assert inside.mean() > 2 * outside.mean() + 1, (inside.mean(), outside.mean())
    assert change[25] < inside.mean() and change[49] < inside.mean()  # the fades start and end small


def test_a_shot_of_another_person_is_named_and_can_be_left_out(demo_inputs: tuple[Path, Path],
                                                               tmp_path: Path) -> None:
    from lipdub.config import Settings
    from tests.test_prep_media import cut_to_another_face

    video = cut_to_another_face(tmp_path / "two_people.mp4")  # the second person from 2 s to 4 s
    _, audio = demo_inputs
    settings = Settings(data_dir=tmp_path / "var")
    result = dub(video, audio, tmp_path / "all.mp4", settings, options(sync_mode="cut_off"))
    assert result.other_person_s == [(2.0, 4.0)] and result.passed_through == 0
    kept = dub(video, audio, tmp_path / "first.mp4", settings, options(sync_mode="cut_off", ranges=[(0, 2.0)]))
    assert kept.passed_through == kept.outside_ranges == 50


@pytest.mark.parametrize("rate", ["24000/1001", "30"])
def test_the_output_keeps_the_sources_frame_rate(demo_inputs: tuple[Path, Path], tmp_path: Path,
                                                 rate: str) -> None:
    """A 23.976- or 30-fps source comes out at its own rate, every source frame shown once (no frame
    repeated or dropped, which 25 fps would need), its mouth moving as in the 25-fps output and in step with
    it; `frame_rate="25"` re-times it as DH_live does."""
    import subprocess
    from fractions import Fraction

    from lipdub.config import Settings
    from lipdub.eval.signals import mouth_opening_signal
    from lipdub.eval.sync import lagged_correlation
    from lipdub.eval.tracks import track_video
    from lipdub.media.video import normalize_video

    video, audio = demo_inputs
    source = tmp_path / "source.mp4"  # the demo clip re-timed by blending neighbours: every frame is new
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-vf", f"minterpolate=fps={rate}:mi_mode=blend",
                    "-c:v", "libx264", "-crf", "16", str(source)], check=True)
    settings = Settings(data_dir=tmp_path / "var")
    native = dub(source, audio, tmp_path / "native.mp4", settings, options(sync_mode="cut_off"))
    fps = float(Fraction(rate))
    info = probe(native.output)
    assert info.video is not None and native.rate == rate and info.video.fps == pytest.approx(fps, rel=1e-4)
    assert count_frames(native.output) == native.frames == min(count_frames(source),
                                                               round(probe(audio).duration * fps))
    retimed = dub(source, audio, tmp_path / "retimed.mp4", settings,
                  options(sync_mode="cut_off", frame_rate="25"))
    assert retimed.rate == "25" and probe(retimed.output).video.fps == pytest.approx(FPS)

    def repeats(path: Path) -> int:
        """Frames whose upper half (hair, helmet: never re-drawn) is the previous frame's: repeated source frames."""
        frames = read_all(path)
        top = slice(0, frames[0].shape[0] // 4)
        return sum(np.abs(b[top].astype(np.int16) - a[top]).mean() < 0.3 for a, b in zip(frames, frames[1:]))

    assert repeats(native.output) == 0
    if fps < FPS:
        assert repeats(retimed.output) >= 1  # 23.976 → 25 fps repeats a frame about every second
    # The mouth moves as in the 25-fps output, at the same time (both measured on 25-fps copies).
    openings = []
    for result in (native, retimed):
        copy = result.output.with_name(f"{result.output.stem}-25.mp4")
        normalize_video(result.output, copy)
        track = track_video(copy)
        openings.append(mouth_opening_signal(track.landmarks, track.valid))
    lags, r, _ = lagged_correlation(openings[0], openings[1], 3)
    assert lags[int(np.nanargmax(r))] == 0 and np.nanmax(r) > 0.8, r
