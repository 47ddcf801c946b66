"""Bad inputs get a clear error code and message from `lipdub dub` (exit status 2), never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lipdub.media.audio import save_wav
from lipdub.media.video import VideoWriter


def run_dub(video: Path, audio: Path, out: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`lipdub dub -q` with a prep cache of its own (next to `out`), so each test runs the face mesh."""
    return subprocess.run([sys.executable, "-m", "lipdub.cli", "dub", str(video), str(audio), "-o", str(out), "-q",
                           *options],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LIPDUB_DATA_DIR": str(out.parent / "var")})


def assert_rejected(result: subprocess.CompletedProcess[str], code: str) -> None:
    assert result.returncode == 2, result.stderr
    assert f"[{code}]" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    _, audio = demo_inputs
    assert_rejected(run_dub(tmp_path / "missing.mp4", audio, tmp_path / "o.mp4"), "input_unreadable")


def test_text_file_named_mp4(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    _, audio = demo_inputs
    fake = tmp_path / "fake.mp4"
    fake.write_text("definitely not a video\n" * 50)
    result = run_dub(fake, audio, tmp_path / "o.mp4")
    assert_rejected(result, "input_unreadable")
    assert "fake.mp4" in result.stderr


def test_video_as_audio_without_audio_stream(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    video, _ = demo_inputs
    assert_rejected(run_dub(video, video, tmp_path / "o.mp4"), "no_audio_stream")


def test_audio_without_speech(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    video, _ = demo_inputs
    hum = tmp_path / "hum.wav"
    rng = np.random.default_rng(1)
    save_wav(hum, 0.003 * rng.standard_normal(16000 * 3).astype(np.float32))
    assert_rejected(run_dub(video, hum, tmp_path / "o.mp4"), "no_speech")


def test_quiet_room_tone_is_not_speech(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """Noise whose level swings by 12 dB (-66 / -54 dBFS) fools the voice detector, which compares the
    track's levels with each other; the absolute floor (min_speech_dbfs) does not let it through."""
    video, _ = demo_inputs
    room = tmp_path / "room.wav"
    rng = np.random.default_rng(2)
    t = np.arange(16000 * 4)
    level = np.where((t // 4800) % 2 == 0, 0.0005, 0.002).astype(np.float32)
    save_wav(room, level * rng.standard_normal(t.size).astype(np.float32))
    result = run_dub(video, room, tmp_path / "o.mp4")
    assert_rejected(result, "no_speech")
    assert "-54 dBFS" in result.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_video_without_a_face(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    _, audio = demo_inputs
    blank = tmp_path / "wall.mp4"
    with VideoWriter(blank, 160, 120) as writer:
        for i in range(50):
            frame = np.zeros((120, 160, 3), np.uint8)
            frame[:, :, 1] = np.linspace(40, 200, 160)[None, :].astype(np.uint8)
            frame[:, :, 2] = i
            writer.write(frame)
    assert_rejected(run_dub(blank, audio, tmp_path / "o.mp4"), "no_face")


@pytest.mark.parametrize("option", [["--sync-mode", "sideways"], ["--device", "tpu"]])
def test_bad_options(demo_inputs: tuple[Path, Path], tmp_path: Path, option: list[str]) -> None:
    video, audio = demo_inputs
    result = subprocess.run([sys.executable, "-m", "lipdub.cli", "dub", str(video), str(audio), *option],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "must be one of" in result.stderr


def test_face_option_picks_one_of_two_faces(demo_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.test_prep_media import two_faces

    _, audio = demo_inputs
    video = two_faces(tmp_path / "two.mp4")
    assert_rejected(run_dub(video, audio, tmp_path / "o.mp4"), "multiple_faces")
    picked = run_dub(video, audio, tmp_path / "o.mp4", "--face", "20,28,220,228", "--face-time", "0.5")
    assert picked.returncode == 0, picked.stderr
    assert (tmp_path / "o.mp4").is_file()
    # -q: the result line only, none of MediaPipe's native start-up notes (lipdub.native_stderr).
    assert re.fullmatch(r"wrote .*o\.mp4 \(\d+ frames at 25 fps, \d+ passed through, face in \d+% of source frames\)",
                        " ".join(picked.stderr.split())), picked.stderr  # rich wraps it at 80 columns


def test_dub_says_when_it_chose_the_face_talking_in_the_soundtrack(tmp_path: Path) -> None:
    from lipdub.demo import speak
    from tests.test_prep_media import side_by_side, sway_face, talking_face

    speech = speak("The quick brown fox jumps over the lazy dog, and then it runs away into the dark forest.",
                   tmp_path / "speech.wav")
    talking = talking_face(tmp_path / "talking.mp4", speech, 6.0, tmp_path)
    video = side_by_side(tmp_path / "two.mp4", sway_face(tmp_path / "listener.mp4", 6.0), talking, speech)
    result = run_dub(video, speech, tmp_path / "o.mp4")
    assert result.returncode == 0, result.stderr
    assert "2 faces were equally prominent; dubbed the one whose lips follow the video's own soundtrack" in \
        " ".join(result.stderr.split())


@pytest.mark.parametrize("face, time", [("360", "0"), ("1,2,3", "0"), ("a,b", "0"), ("-1,5", "0"),
                                        ("30,30,10,10", "0"), ("nan,5", "0"), ("20,28", "nan"), ("20,28", "inf")])
def test_bad_face_option(demo_inputs: tuple[Path, Path], tmp_path: Path, face: str, time: str) -> None:
    video, audio = demo_inputs
    result = run_dub(video, audio, tmp_path / "o.mp4", f"--face={face}", f"--face-time={time}")
    assert result.returncode == 2 and "--face" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("name", ["result", "folder", "clip.webm"])
def test_bad_output_path_is_refused_before_any_work(demo_inputs: tuple[Path, Path], tmp_path: Path,
                                                    name: str) -> None:
    video, audio = demo_inputs
    (tmp_path / "folder").mkdir()
    result = run_dub(video, audio, tmp_path / name)
    assert result.returncode == 2 and "--out" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing written


@pytest.mark.parametrize(("ranges", "said"), [(["2:5"], "START-END"), (["5-2"], "needs 0 <= start < end"),
                                              (["0-3", "2-4"], "starts before range 1 ends")])
def test_bad_ranges_are_refused_before_any_work(demo_inputs: tuple[Path, Path], tmp_path: Path,
                                               ranges: list[str], said: str) -> None:
    video, audio = demo_inputs
    result = run_dub(video, audio, tmp_path / "o.mp4", *[a for r in ranges for a in ("--range", r)])
    assert result.returncode == 2 and "--range" in result.stderr and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())  # nothing written


def test_ranges_are_read_in_seconds_or_timecodes() -> None:
    import typer

    from lipdub.cli import parse_ranges

    assert parse_ranges(["1:02.5-1:10", "90-95.5", "0:02:00-0:02:01"]) == ((62.5, 70.0), (90.0, 95.5),
                                                                          (120.0, 121.0))
    for bad in ("1:75-2:00", "a-b", "1::2-3", "-5", "1.5:2-3"):
        with pytest.raises(typer.BadParameter):
            parse_ranges([bad])


def test_the_suggested_ranges_leave_out_exactly_the_other_persons_spans() -> None:
    from lipdub.cli import complement

    assert complement([(2.0, 5.96)], 9.64) == [(0.0, 2.0), (5.96, 9.64)]
    assert complement([(0.0, 1.0), (3.0, 4.0)], 4.0) == [(1.0, 3.0)]
    assert complement([(0.0, 4.0)], 4.0) == []


def test_loudest_level_finds_a_short_phrase_in_a_long_silence() -> None:
    from lipdub.audio.analyze import loudest_level

    track = np.zeros(16000 * 60, np.float32)
    track[16000 * 30: 16000 * 30 + 4000] = 0.05 * np.sin(np.arange(4000) * 0.2)  # 0.25 s at -29 dBFS
    assert abs(loudest_level(track, 0.2) - 20 * np.log10(0.05 / np.sqrt(2))) < 0.5
    assert loudest_level(track[:100], 0.2) < -150  # shorter than the window, and silent
