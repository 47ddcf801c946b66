import subprocess
from pathlib import Path

import numpy as np
import pytest

from lipdub.errors import ErrorCode, InputError, LipdubError
from lipdub.media.audio import load_audio, save_wav
from lipdub.media.probe import probe
from lipdub.media.video import FrameReader, VideoWriter, count_frames


def _ramp_video(path: Path, n: int = 60, size: tuple[int, int] = (64, 48)) -> Path:
    w, h = size
    with VideoWriter(path, w, h, crf=0) as writer:
        for i in range(n):
            frame = np.full((h, w, 3), (i * 4) % 256, np.uint8)  # each frame carries its index as grey level
            writer.write(frame)
    return path


def test_writer_and_probe(tmp_path: Path) -> None:
    video = _ramp_video(tmp_path / "ramp.mp4")
    info = probe(video)
    assert info.video is not None and info.audio is None
    assert (info.video.width, info.video.height) == (64, 48)
    assert info.video.fps == pytest.approx(25.0)
    assert count_frames(video) == 60


def test_reader_serves_any_order_identically(tmp_path: Path) -> None:
    video = _ramp_video(tmp_path / "ramp.mp4")
    reader = FrameReader(video, 64, 48, 60, block=8)

    def index(i: int) -> int:  # decode the grey level back to the frame index (yuv rounding is ±1)
        return round(float(reader[i][8:40, 8:56].mean()) / 4)

    forward = [index(i) for i in range(60)]
    backward = [index(i) for i in reversed(range(60))]
    jumps = [index(i) for i in (50, 3, 40, 41, 7)]
    reader.close()
    assert forward == list(range(60))
    assert backward == forward[::-1]
    assert jumps == [50, 3, 40, 41, 7]


@pytest.mark.parametrize("pattern", ["bounce", "loop", "retimed bounce"])
def test_reader_starts_few_decoders_whatever_the_timeline(tmp_path: Path, pattern: str) -> None:
    """A bounce (forward, reverse, forward) or a loop reads every frame right and starts about one ffmpeg
    per keyframe block in reverse and one per restart: never one per frame."""
    video = _ramp_video(tmp_path / "ramp.mp4", n=60)  # the writer's keyframe interval is 25 frames
    reader = FrameReader(video, 64, 48, 60, block=25)
    if pattern == "bounce":
        order = [*range(60), *reversed(range(60)), *range(60)]
    elif pattern == "loop":
        order = [*range(60)] * 3
    else:  # a faster source read at 25 fps: steps of 1 and 2 frames (as RetimedReader's indices go)
        order = [*range(0, 60, 2), *reversed(range(1, 60, 3)), *range(0, 60, 2)]
    seen = [round(float(reader[i][8:40, 8:56].mean()) / 4) for i in order]
    reader.close()
    assert seen == order
    expected = {"bounce": 1 + 3 + 1, "loop": 3, "retimed bounce": 1 + 3 + 1}[pattern]  # blocks 0-24, 25-49, 50-59
    assert reader.decoders <= expected, f"{reader.decoders} ffmpeg processes for {len(order)} reads"


def test_writer_keeps_colours(tmp_path: Path) -> None:
    # A channel mix-up or a range error on the way to YUV 4:2:0 and back would show here.
    colours = [(200, 30, 40), (20, 180, 60), (30, 50, 210), (240, 240, 240)]
    frame = np.zeros((48, 64, 3), np.uint8)
    for k, c in enumerate(colours):
        frame[:, k * 16:(k + 1) * 16] = c
    with VideoWriter(tmp_path / "rgb.mp4", 64, 48, crf=0) as writer:
        writer.write(frame)
    with FrameReader(tmp_path / "rgb.mp4", 64, 48, 1) as reader:
        back = reader[0].astype(int)
    for k, c in enumerate(colours):
        assert np.abs(back[8:40, k * 16 + 4:(k + 1) * 16 - 4].mean((0, 1)) - c).max() < 4


def test_odd_sized_frames_cross_the_pipe_as_rgb_and_the_writer_refuses_them(tmp_path: Path) -> None:
    # Even sizes cross as 4:2:0 (PipeFormat); 4:2:0 has no odd sizes, so those are read as ffmpeg's RGB.
    frame = np.zeros((47, 63, 3), np.uint8)
    frame[:, :21], frame[:, 21:42], frame[:, 42:] = (200, 30, 40), (20, 180, 60), (30, 50, 210)
    path = tmp_path / "odd.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "63x47", "-i", "pipe:0",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", str(path)], input=frame.tobytes(), check=True)
    with FrameReader(path, 63, 47, 1) as reader:
        back = reader[0].astype(int)
    assert back.shape == (47, 63, 3)
    for x0, colour in ((0, (200, 30, 40)), (21, (20, 180, 60)), (42, (30, 50, 210))):
        assert np.abs(back[4:43, x0 + 4:x0 + 17].mean((0, 1)) - colour).max() < 4
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "odd-out.mp4", 63, 47)


def test_audio_roundtrip_resamples_to_16k_mono(tmp_path: Path) -> None:
    t = np.arange(22050) / 22050
    save_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32), 22050)
    samples = load_audio(tmp_path / "tone.wav")
    assert samples.dtype == np.float32
    assert len(samples) == pytest.approx(16000, abs=2)
    assert 0.45 < np.abs(samples).max() <= 0.51


@pytest.mark.parametrize("right, peak", [(1.0, 0.5), (0.8, 0.45), (0.3, 0.5), (0.0, 0.5), (-1.0, 0.5)])
def test_stereo_becomes_mono_without_losing_the_voice(tmp_path: Path, right: float, peak: float) -> None:
    """In phase: the mix. In opposite phase (a mix would cancel to silence) or panned to one side: the louder
    channel, at its own level."""
    import subprocess

    t = np.arange(16000) / 16000
    left = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    save_wav(tmp_path / "left.wav", left)
    save_wav(tmp_path / "right.wav", right * left)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(tmp_path / "left.wav"), "-i", str(tmp_path / "right.wav"),
                    "-filter_complex", "[0:a][1:a]amerge=inputs=2", str(tmp_path / "stereo.wav")], check=True)
    samples = load_audio(tmp_path / "stereo.wav")
    assert np.abs(samples).max() == pytest.approx(peak, abs=0.02)


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        probe(tmp_path / "nope.mp4")
    assert missing.value.code == ErrorCode.input_unreadable
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError) as empty:
        probe(tmp_path / "empty.mp4")
    assert empty.value.code == ErrorCode.empty_input
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(InputError) as text:
        probe(tmp_path / "notes.mp4")
    assert text.value.code == ErrorCode.input_unreadable
    assert "notes.mp4" in text.value.message


def test_video_writer_reports_a_dead_encoder_and_never_hangs(tmp_path: Path) -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    writer = VideoWriter(tmp_path / "missing-dir" / "out.mp4", 64, 64)  # ffmpeg can't open its output
    with pytest.raises(LipdubError, match="ffmpeg encoder") as failed:
        for _ in range(500):  # more than the queue and the pipe hold: the feeder must not block for good
            writer.write(frame)
        writer.close()
    assert failed.value.code == ErrorCode.internal and "missing-dir" in failed.value.message  # ffmpeg's stderr
    # An error in the caller's block kills the encoder and leaves no file.
    with pytest.raises(ValueError), VideoWriter(tmp_path / "half.mp4", 64, 64) as w:
        w.write(frame)
        raise ValueError("caller failed")
    assert not list(tmp_path.glob("half*"))


@pytest.mark.parametrize("rate", ["24000/1001", "30", "50", "15"])
def test_prep_analyses_and_the_track_reads_the_same_frames_of_a_non_25_fps_source(tmp_path: Path, rate: str) -> None:
    """A source not at 25 fps is kept at its own rate; the 25-fps frames prep analyses (NormalizingStream) and
    the ones SourceTrack.reader serves later (RetimedReader) are the same frames, so landmarks always fit."""
    import subprocess
    from fractions import Fraction

    from lipdub.media.probe import probe
    from lipdub.media.video import FrameReader, NormalizingStream, RetimedReader, plan_normalization

    n = 90
    frames = np.zeros((n, 32, 64, 3), np.uint8)
    for k in range(n):  # frame k shows its number as its grey level
        frames[k] = 2 * k + 10
    src = tmp_path / "src.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "64x32", "-r", rate,
                    "-i", "pipe:0", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", str(src)],
                   input=frames.tobytes(), check=True)
    plan = plan_normalization(probe(src), 2160, 720)
    assert plan.native_rate == rate
    stream = NormalizingStream(src, tmp_path / "native.mp4", plan)
    analysed_levels = [float(f.mean()) for f in stream]
    assert stream.finish() == len(analysed_levels) and stream.written == n
    fps = float(Fraction(rate))
    with FrameReader(tmp_path / "native.mp4", 64, 32, n, fps=fps) as native:
        levels = np.array([float(f.mean()) for f in native])  # (yuv420p moves them a little: match, don't decode)

    def which(level: float) -> int:
        return int(np.argmin(np.abs(levels - level)))

    analysed = [which(level) for level in analysed_levels]
    assert len(analysed) == pytest.approx(n * 25 / fps, abs=1)
    # Frame i of the 25-fps view is the source frame nearest in time to i / 25.
    assert all(abs(k / fps - i / 25) <= 0.5 / fps + 1e-9 for i, k in enumerate(analysed)), analysed
    with RetimedReader(FrameReader(tmp_path / "native.mp4", 64, 32, n, fps=fps), len(analysed)) as view:
        served = [which(float(view[i].mean())) for i in range(len(analysed))]
    assert served == analysed


@pytest.mark.parametrize(("tune", "deblock"), [("film", b"deblock=1:-1:-1"), ("none", b"deblock=1:0:0")])
def test_writer_encodes_with_the_tuning_asked_for(tmp_path: Path, tune: str, deblock: bytes) -> None:
    """The output's x264 tuning reaches the encoder (x264 writes its options into the stream): `film` keeps
    skin texture at the same bitrate (BENCHMARKS 'Output encoding'), `none` is x264's own default."""
    rng = np.random.default_rng(0)
    with VideoWriter(tmp_path / "out.mp4", 64, 48, tune=tune) as writer:
        for _ in range(3):
            writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    assert deblock in (tmp_path / "out.mp4").read_bytes()
