"""What a media file holds (ffprobe), or a clear InputError when it can't be used."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from lipdub.errors import ErrorCode, InputError
from lipdub.media.ffmpeg import ffprobe_json, run_ffprobe


@dataclass(frozen=True)
class VideoStream:
    width: int
    height: int
    fps: float  # average frame rate
    duration: float  # seconds
    codec: str
    rotation: int  # degrees from the display matrix / rotate tag (0, 90, 180, 270)
    variable_frame_rate: bool
    pix_fmt: str = ""
    sample_aspect: float = 1.0  # pixel width / height (anamorphic sources ≠ 1)
    nominal_fps: float = 0.0  # r_frame_rate: the container's base rate

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown: square pixels, rotation applied."""
        w, h = round(self.width * self.sample_aspect), self.height
        return (h, w) if self.rotation % 180 == 90 else (w, h)


@dataclass(frozen=True)
class AudioStream:
    sample_rate: int
    channels: int
    duration: float
    codec: str


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    format: str
    duration: float
    video: VideoStream | None
    audio: AudioStream | None


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "0"):
        return 0.0
    return float(Fraction(text))


def _aspect(text: str | None) -> float:
    try:
        return float(Fraction(str(text).replace(":", "/"))) or 1.0
    except (ValueError, ZeroDivisionError):
        return 1.0


def _rotation(stream: dict) -> int:
    rotate = stream.get("tags", {}).get("rotate")
    if rotate is not None:
        return int(float(rotate)) % 360
    for side in stream.get("side_data_list", []):
        if "rotation" in side:
            return int(-float(side["rotation"])) % 360  # display matrix is counter-clockwise
    return 0


def probe(path: str | Path) -> MediaInfo:
    """Describe a media file. Raises InputError (input_unreadable / empty_input) when ffprobe can't read it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(ErrorCode.input_unreadable, f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(ErrorCode.empty_input, f"{path}: the file is empty")
    data = ffprobe_json(str(path), code=ErrorCode.input_unreadable, what=f"{path.name}: not a readable media file")
    fmt = data.get("format", {})
    container_duration = float(fmt.get("duration") or 0.0)
    video = audio = None
    for stream in data.get("streams", []):
        kind = stream.get("codec_type")
        duration = float(stream.get("duration") or container_duration or 0.0)
        if kind == "video" and video is None and stream.get("disposition", {}).get("attached_pic", 0) == 0:
            avg, real = _rate(stream.get("avg_frame_rate")), _rate(stream.get("r_frame_rate"))
            fps = avg or real
            video = VideoStream(
                width=int(stream.get("width") or 0),
                height=int(stream.get("height") or 0),
                fps=fps,
                duration=duration,
                codec=str(stream.get("codec_name", "")),
                rotation=_rotation(stream),
                # avg != nominal rate is how VFR shows up in ffprobe (phones, screen recordings).
                variable_frame_rate=bool(avg and real and not math.isclose(avg, real, rel_tol=0.01)),
                pix_fmt=str(stream.get("pix_fmt", "")),
                sample_aspect=_aspect(stream.get("sample_aspect_ratio")),
                nominal_fps=real,
            )
        elif kind == "audio" and audio is None:
            audio = AudioStream(
                sample_rate=int(stream.get("sample_rate") or 0),
                channels=int(stream.get("channels") or 0),
                duration=duration,
                codec=str(stream.get("codec_name", "")),
            )
    return MediaInfo(path, str(fmt.get("format_name", "")), container_duration, video, audio)


@dataclass(frozen=True)
class PacketTimes:
    """Presentation times of the video packets in display order, and the largest keyframe gap."""

    pts: list[float]
    max_keyframe_gap: int  # packets between consecutive keyframes (or to the end)


def packet_times(path: str | Path) -> PacketTimes:
    """Read packet timestamps without decoding (fast even for long files); raises unsupported_video."""
    path = Path(path)
    out = run_ffprobe(["-select_streams", "v:0", "-show_entries", "packet=pts_time,flags", "-of", "csv=p=0",
                       str(path)], code=ErrorCode.unsupported_video,
                      what=f"{path.name}: ffprobe could not read the video packets")
    rows = []
    for line in out.splitlines():
        parts = line.strip().split(",")
        if len(parts) >= 2 and parts[0] not in ("", "N/A"):
            rows.append((float(parts[0]), "K" in parts[1]))
    keys = [i for i, (_, k) in enumerate(rows) if k] + [len(rows)]
    gap = max((b - a for a, b in itertools.pairwise(keys)), default=len(rows))
    if not keys[:-1]:
        gap = len(rows)
    return PacketTimes(sorted(t for t, _ in rows), gap)
