"""mux: join rendered parts and the dub audio into the final MP4 (H.264 copy + AAC)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from lipdub import FPS
from lipdub.config import Settings
from lipdub.progress import SILENT, Progress


def mux(parts: list[Path], audio: Path, n_frames: int, out: Path, settings: Settings,
        progress: Progress = SILENT) -> None:
    """The output lasts exactly n_frames / 25 s: the audio is cut or padded with silence to that length."""
    duration = n_frames / FPS
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp" + out.suffix)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing, \
            progress.stage("mux", 1) as advance:
        for part in parts:
            listing.write(f"file '{part.resolve()}'\n")
        listing.flush()
        cmd = ["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", listing.name,
               "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
               "-af", f"apad=whole_dur={duration:.6f}", "-c:a", "aac", "-b:a", settings.audio_bitrate,
               "-t", f"{duration:.6f}", "-movflags", "+faststart", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        Path(listing.name).unlink(missing_ok=True)
        if result.returncode != 0:
            raise RuntimeError(f"ffmpeg mux failed: {result.stderr.strip()[-500:]}")
        tmp.replace(out)
        advance(1)
