"""mux: join rendered parts and the dub audio into the final MP4 (H.264 copy + AAC)."""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

from lipdub import FPS
from lipdub.config import Settings
from lipdub.errors import ErrorCode
from lipdub.media.ffmpeg import run_ffmpeg
from lipdub.progress import SILENT, Progress

# Containers that take the H.264 video and AAC audio as they are muxed.
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


def mux(parts: list[Path], audio: Path, n_frames: int, out: Path, settings: Settings,
        progress: Progress = SILENT, rate: str = str(FPS)) -> None:
    """The output lasts exactly n_frames at `rate` (the parts' frame rate): the audio is cut or padded with
    silence to that length."""
    duration = n_frames / float(Fraction(rate))
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written next to `out` under its own extension (ffmpeg picks the container by it), then renamed.
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing, \
            progress.stage("mux", 1) as advance:
        for part in parts:
            listing.write(f"file '{part.resolve()}'\n")
        listing.flush()
        args = ["-y", "-f", "concat", "-safe", "0", "-i", listing.name,
                "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                "-af", f"apad=whole_dur={duration:.6f}", "-c:a", "aac", "-b:a", settings.audio_bitrate,
                "-t", f"{duration:.6f}", "-movflags", "+faststart", str(tmp)]
        try:
            run_ffmpeg(args, code=ErrorCode.internal, what=f"ffmpeg could not mux {out.name}")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            Path(listing.name).unlink(missing_ok=True)
        tmp.replace(out)
        advance(1)
