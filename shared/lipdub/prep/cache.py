"""Prep once per source: tracks are cached under the SHA-256 of the source bytes plus the prep version, which
covers the prep code (PREP_VERSION) and the settings that change what prep decides (`prep.track.prep_version`).

Catalog dubbing sends one source many times (a job per language); every job after the first gets the
stored track at the cost of hashing the file. A rejected source is cached too (its gate verdict), so a
resubmission fails fast with the same code. Entries are written under a temporary name and renamed into
place, so concurrent preps of one source never see a half-written entry (the last rename wins; both are
identical).

The cache is bounded per host (`prep_cache_max_gb`): every use marks its entry as recent, and publishing an
entry deletes the least recently used ones past the budget; entries used in the last hour are kept, since a
render on this host may still be reading them.

Layout: `<root>/<sha256>[-<target>]-v<prep_version>/{video.mp4 | native.mp4, track.npz, track.json |
rejected.json}`,
matching the object-store keys of lipdub.service.storage (`prep/<sha256>[-<target>]-v<version>/<name>`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
import uuid
from pathlib import Path

from lipdub.config import Settings
from lipdub.digest import sha256_file
from lipdub.errors import ErrorCode, InputError
from lipdub.prep.source import prepare_source
from lipdub.prep.track import SourceTrack, prep_version
from lipdub.prep.tracking import Target
from lipdub.progress import SILENT, Progress

IN_USE_S = 3600.0  # entries used this recently are never evicted (a render chunk is far shorter)

def cache_root(settings: Settings) -> Path:
    return settings.data_dir / "prep"


def mark_used(entry: Path) -> None:
    """Record a use of `entry` (its mtime) for the least-recently-used eviction."""
    with contextlib.suppress(OSError):  # evicted meanwhile: the caller already holds what it needs
        entry.touch()


def evict(root: Path, max_bytes: int, now: float | None = None) -> list[Path]:
    """Delete the least recently used entries until the cache fits `max_bytes`; entries in progress
    (temporary names) and entries used within IN_USE_S are never touched. Returns the deleted entries."""
    now = time.time() if now is None else now
    entries = []
    for entry in published(root):
        size = sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
        entries.append((entry.stat().st_mtime, entry, size))
    total = sum(size for _, _, size in entries)
    deleted = []
    for used, entry, size in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if now - used < IN_USE_S:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        deleted.append(entry)
    return deleted


def published(root: Path) -> list[Path]:
    """The entries in `root`, without those still being written (temporary names)."""
    return [e for e in root.iterdir() if e.is_dir() and not e.name.startswith(".tmp-")] if root.is_dir() else []


def entry_digest(entry: Path) -> str:
    """The SHA-256 of the source bytes an entry was made from (the first part of its name)."""
    return entry.name.split("-", 1)[0]


def max_bytes(settings: Settings) -> int:
    return int(settings.prep_cache_max_gb * 1e9)


def source_key(digest: str, target: Target | None = None) -> str:
    """What one prep is of: the source bytes, plus the user's choice of face when there is one (a
    different face of the same video is a different track)."""
    if target is None or not target.key():
        return digest
    return f"{digest}-{hashlib.sha256(target.key().encode()).hexdigest()[:12]}"


def entry_name(source: str, settings: Settings) -> str:
    """The cache entry of a source key under the current prep version and settings."""
    return f"{source}-v{prep_version(settings)}"


def load_entry(entry: Path, name: str | None = None) -> SourceTrack | None:
    """The cached track, re-raising a cached rejection (about file `name`, when given: the same bytes may
    come under another name); None when there is no usable entry."""
    rejected = entry / "rejected.json"
    if rejected.is_file():
        data = json.loads(rejected.read_text())
        message, was = data["message"], data.get("name")
        if name is not None and was and message.startswith(f"{was}: "):
            message = f"{name}: {message.removeprefix(f'{was}: ')}"
        raise InputError(ErrorCode(data["code"]), message)
    if (entry / "track.json").is_file() and (entry / "track.npz").is_file():
        try:
            track = SourceTrack.load(entry)
        except (ValueError, KeyError, OSError):
            return None  # written by another prep version or damaged: prep again
        return track if track.video.is_file() else None
    return None


def prepare_cached(video: Path, settings: Settings, progress: Progress = SILENT, target: Target | None = None,
                   digest: str | None = None) -> SourceTrack:
    """The source track of `video`, prepared at most once per (bytes, prep version, target).

    The embedded pipeline and the prep worker both call this; `digest` skips hashing when the caller
    already knows it (the service stores assets by SHA-256).
    """

    root = cache_root(settings)
    entry = root / entry_name(source_key(digest or sha256_file(video), target), settings)
    cached = load_entry(entry, video.name)
    if cached is not None:
        mark_used(entry)
        return cached
    tmp = root / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        try:
            prepare_source(video, tmp, settings, progress, target=target)
        except InputError as exc:
            (tmp / "rejected.json").write_text(json.dumps({"code": str(exc.code), "message": exc.message,
                                                           "name": video.name}))
            for leftover in tmp.iterdir():
                if leftover.name != "rejected.json":
                    leftover.unlink()
            publish(tmp, entry)
            raise
        publish(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mark_used(entry)
    evict(root, max_bytes(settings))
    track = load_entry(entry)
    assert track is not None
    return track


def publish(tmp: Path, entry: Path) -> None:
    """Move a finished entry into place atomically; an entry another process published first wins."""
    try:
        tmp.rename(entry)
    except OSError:
        if not entry.is_dir():
            raise
