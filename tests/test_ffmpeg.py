"""lipdub.media.ffmpeg: the one place ffmpeg and ffprobe run, with one error behaviour."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lipdub.errors import ErrorCode, InputError, LipdubError
from lipdub.media.ffmpeg import FfmpegProcess, run_ffmpeg, run_ffprobe

REPO = Path(__file__).resolve().parents[1]


def test_a_failure_names_what_failed_and_keeps_ffmpegs_reason(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError) as bad_input:
        run_ffmpeg(["-i", str(missing), "-f", "null", "-"], code=ErrorCode.input_unreadable, what="nope.mp4: unreadable")
    assert bad_input.value.code == ErrorCode.input_unreadable
    assert bad_input.value.message.startswith("nope.mp4: unreadable (")
    assert "No such file or directory" in bad_input.value.message  # the tail of ffmpeg's stderr

    with pytest.raises(LipdubError) as ours:  # an internal failure is not the user's input error
        run_ffprobe([str(missing)], code=ErrorCode.internal, what="probe of our own file")
    assert ours.value.code == ErrorCode.internal and not isinstance(ours.value, InputError)


def test_a_missing_binary_is_an_internal_error_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LipdubError, match="ffprobe is not installed") as failed:
        run_ffprobe(["-version"], code=ErrorCode.input_unreadable, what="probe")
    assert failed.value.code == ErrorCode.internal  # never blamed on the user's file
    with pytest.raises(LipdubError, match="ffmpeg is not installed"):
        FfmpegProcess(["-version"], code=ErrorCode.internal, what="encode")


def test_a_streaming_process_raises_on_close_unless_it_was_killed(tmp_path: Path) -> None:
    failing = FfmpegProcess(["-i", str(tmp_path / "nope.mp4"), "-f", "rawvideo", "pipe:1"],
                            code=ErrorCode.unsupported_video, what="decode", stdout=True)
    assert failing.stdout.read() == b""
    with pytest.raises(InputError, match=r"decode \(.*No such file"):
        failing.close()

    endless = FfmpegProcess(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=25", "-f", "rawvideo", "pipe:1"],
                            code=ErrorCode.internal, what="decode", stdout=True)
    assert len(endless.stdout.read(64 * 64 * 3)) == 64 * 64 * 3
    endless.kill()  # the reader has what it wants
    endless.close()  # no error: the exit status of a killed process means nothing


def test_nothing_else_spawns_ffmpeg() -> None:
    """Every ffmpeg/ffprobe call goes through lipdub.media.ffmpeg (the one error behaviour)."""
    spawn = re.compile(r"""["'](ffmpeg|ffprobe)["']\s*,|^import ffmpeg\b""", re.MULTILINE)  # ffmpeg-python too
    offenders = [str(path.relative_to(REPO)) for folder in ("shared", "services", "bench")
                 for path in (REPO / folder).rglob("*.py")
                 if path.name != "ffmpeg.py" and spawn.search(path.read_text())]
    assert offenders == []
    assert spawn.search('subprocess.run(["ffmpeg", "-i", src])')  # the pattern catches a direct call
