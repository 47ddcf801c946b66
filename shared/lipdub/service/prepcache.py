"""The prep cache of the service: prep artifacts stored once per source content (SHA-256) and prep version
(the prep code's and the prep settings': lipdub.prep.track.prep_version).

Two levels: object storage holds every prepared source under `prep/{source}-v{prep_version}/` for all
workers (the source key is the SHA-256 of the bytes, plus a hash of the user's face choice when the job
made one: lipdub.prep.cache.source_key), with a Redis pointer per source (JobStore.prep_pointer) written
only after every artifact is stored; each worker host keeps the same entries on local disk (lipdub.prep.cache, the embedded mode's
cache, same layout), so the render chunks of one source on one host download its artifacts once.
When the last asset holding a source's bytes is deleted, its stored prep goes at once
(lipdub.service.inputs.delete_asset) and every worker deletes its local copies within `janitor_seconds`
(`purge_deleted`, run by lipdub.service.worker.purge_local_prep).
A source the prep gate rejects is cached as a rejection, so a resubmission fails fast with the same code.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.jobs import JobSpec
from lipdub.prep.cache import (
    cache_root,
    entry_digest,
    entry_name,
    evict,
    mark_used,
    max_bytes,
    publish,
    published,
    source_key,
)
from lipdub.prep.cache import prepare_cached as prepare_on_host
from lipdub.prep.track import SourceTrack, prep_version
from lipdub.prep.tracking import Target
from lipdub.progress import SILENT, Progress
from lipdub.render import ENROLLED, current_enrolment, generic_weights
from lipdub.service.indexes import now
from lipdub.service.status import JobStore
from lipdub.service.storage import MissingObject, Storage, keys

log = logging.getLogger(__name__)


def job_source(spec: JobSpec) -> tuple[str, Target | None]:
    """A job's source: the video's SHA-256 and the face it asks for (None: automatic)."""
    return spec.video.digest, spec.options.target


def job_source_key(spec: JobSpec) -> str:
    return source_key(*job_source(spec))


def prepare_cached(sha: str, store: JobStore, storage: Storage, settings: Settings, scratch: Path,
                   progress: Progress = SILENT, target: Target | None = None) -> tuple[dict[str, Any], bool]:
    """The prep summary of source `sha` (with the user's `target` face, if any), from the cache or by running
    prep; returns (summary, cache hit). Raises the gate's InputError for a rejected source (cached or new)."""
    source, version = source_key(sha, target), prep_version(settings)
    pointer = store.assets.prep_pointer(source)
    if pointer is not None and "rejected" in pointer:
        log.info("prep cache hit (rejected) source=%s", source[:12])
        raise InputError(ErrorCode(pointer["rejected"]["code"]), pointer["rejected"]["message"])
    if pointer is not None and all(storage.exists(keys.prep(source, version, n)) for n in pointer["files"]):
        log.info("prep cache hit source=%s", source[:12])
        return dict(pointer["summary"]), True
    video = storage.get_file(keys.asset(sha), scratch / "source")
    try:
        track = prepare_on_host(video, settings, progress, target=target, digest=sha)
    except InputError as exc:
        store.assets.set_prep_pointer(source, {"rejected": {"code": str(exc.code), "message": exc.message},
                                                      "created_at": now()})
        raise
    files = sorted(p.name for p in track.dir.iterdir() if p.is_file())
    for name in files:
        storage.put_file(keys.prep(source, version, name), track.dir / name)
    if not store.assets.content_held(sha):  # its last asset was deleted meanwhile (a batch's or a preflight's prep)
        storage.delete_tree(keys.prep_of(sha))
        raise InputError(ErrorCode.asset_deleted, "the video was deleted while it was being prepared")
    summary = asdict(track.summary)
    # The pointer is written last: whoever sees it finds every artifact in place.
    store.assets.set_prep_pointer(source, {"files": files, "summary": summary, "created_at": now()})
    return summary, False


def fetch_prep(source: str, store: JobStore, storage: Storage, settings: Settings) -> Path:
    """The local directory holding the prep artifacts of source key `source`, downloaded once per host."""
    pointer, version = store.assets.prep_pointer(source), prep_version(settings)
    if pointer is None or "files" not in pointer:
        raise MissingObject(keys.prep(source, version, "track.json"))
    root = cache_root(settings)
    entry = root / entry_name(source, settings)
    if all((entry / name).is_file() for name in pointer["files"]):
        mark_used(entry)
        return entry
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"
    try:
        for name in pointer["files"]:
            storage.get_file(keys.prep(source, version, name), tmp / name)
        shutil.rmtree(entry, ignore_errors=True)  # an incomplete entry (another prep version, a crash)
        publish(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mark_used(entry)
    evict(root, max_bytes(settings))
    return entry


def purge_deleted(store: JobStore, settings: Settings) -> list[Path]:
    """Delete this host's prep entries made from bytes no asset holds any more (the user deleted them);
    the LRU eviction alone would keep them for as long as the cache has room. Returns the deleted entries."""
    entries = published(cache_root(settings))
    held = store.assets.contents_held(entry_digest(e) for e in entries) if entries else set()
    gone = [e for e in entries if entry_digest(e) not in held]
    for entry in gone:
        shutil.rmtree(entry, ignore_errors=True)
        log.info("deleted the local prep of deleted source %s", entry.name[:12])
    return gone


def enroll_cached(source: str, store: JobStore, storage: Storage, settings: Settings) -> bool:
    """Make sure source `source` has a renderer fine-tuned on it (the job option `enroll`), stored with its
    prep artifacts so every render worker's copy of the entry carries it; tuned once per source and generic
    weights. Returns False when there is nothing to tune (warp renderer, no DINet weights)."""
    # lazy: torch (2.5 s); the prep and audio workers import this module and never enrol
    from lipdub.render.enroll import enroll

    weights = generic_weights(settings)
    if settings.renderer != "dinet" or not weights.is_file():
        return False
    entry = fetch_prep(source, store, storage, settings)
    if current_enrolment(entry, weights) is not None:
        log.info("enrolled renderer cached source=%s", source[:12])
        return True
    enroll(SourceTrack.load(entry), weights, settings.dinet_enroll_steps)
    storage.put_file(keys.prep(source, prep_version(settings), ENROLLED), entry / ENROLLED)
    pointer = store.assets.prep_pointer(source) or {}
    # Listed last, as with the prep artifacts: a worker that sees the name finds the file in storage.
    pointer["files"] = sorted(set(pointer.get("files", [])) | {ENROLLED})
    store.assets.set_prep_pointer(source, pointer)
    log.info("enrolled renderer stored source=%s", source[:12])
    return True
