"""The one settings object. Every environment variable lipdub reads is a field here (prefix LIPDUB_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SyncMode = Literal["cut_off", "loop", "bounce", "silence"]
Device = Literal["auto", "cpu", "cuda"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIPDUB_", env_file=".env", extra="ignore")

    # Where local artifacts live: the prep cache, job workspaces, local storage.
    data_dir: Path = Field(default=Path("var"), description="Root for caches and local storage")
    device: Device = Field(default="auto", description="Torch device for the models")
    sync_mode: SyncMode = Field(default="bounce", description="Default video/audio length policy")

    # Output encoding (H.264 + AAC).
    video_crf: int = Field(default=18, ge=0, le=18, description="x264 CRF of the output (18 or better)")
    video_preset: str = Field(default="veryfast", description="x264 preset of the output")
    audio_bitrate: str = Field(default="192k", description="AAC bitrate of the output")

    # Input limits.
    max_video_seconds: float = Field(default=1800.0, gt=0, description="Longest accepted source video")
    max_audio_seconds: float = Field(default=1800.0, gt=0, description="Longest accepted dub audio")
    max_height: int = Field(default=2160, gt=0, description="Taller sources are scaled down to this")

    # Prep quality gate.
    min_face_coverage: float = Field(default=0.5, ge=0, le=1, description="Share of frames that need a face")
    min_face_px: int = Field(default=64, gt=0, description="Smallest usable face (mesh bounding-box side)")
    min_video_frames: int = Field(default=13, gt=0, description="Shortest usable source (25-fps frames)")

    # Audio stage.
    min_speech_seconds: float = Field(default=0.2, ge=0, description="Less voiced audio than this is no_speech")


@lru_cache
def get_settings() -> Settings:
    return Settings()
