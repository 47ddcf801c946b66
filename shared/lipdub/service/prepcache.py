"""The prep cache of the service: prep artifacts stored once per source content (SHA-256 + PREP_VERSION).

Every job and preflight on the same source bytes, from any tenant, reuses them; Redis holds a pointer per
source (JobStore.prep_pointer) that is written only after all artifacts are stored.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lipdub.config import Settings
from lipdub.errors import ErrorCode, InputError
from lipdub.progress import SILENT, Progress
from lipdub.service.status import JobStore, now
from lipdub.service.storage import Storage, keys
from lipdub.stages.prep import PREP_VERSION, prepare_source

log = logging.getLogger(__name__)


def prepare_cached(sha: str, store: JobStore, storage: Storage, settings: Settings, scratch: Path,
                   progress: Progress = SILENT) -> tuple[dict[str, Any], bool]:
    """The prep summary of source `sha`, from the cache or by running prep; returns (summary, cache hit)."""
    pointer = store.prep_pointer(sha, PREP_VERSION)
    if pointer is not None and all(storage.exists(keys.prep(sha, PREP_VERSION, n)) for n in pointer["files"]):
        check_gate(pointer["summary"], settings)
        log.info("prep cache hit source=%s", sha[:12])
        return pointer["summary"], True
    video = storage.get_file(keys.asset(sha), scratch / "source")
    out = scratch / "prep"
    track = prepare_source(video, out, settings, progress)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and ".tmp" not in p.name)
    for name in files:
        storage.put_file(keys.prep(sha, PREP_VERSION, name), out / name)
    summary = asdict(track.summary)
    # The pointer is written last: whoever sees it finds every artifact in place.
    store.set_prep_pointer(sha, PREP_VERSION, {"files": files, "summary": summary, "created_at": now()})
    return summary, False


def check_gate(summary: dict[str, Any], settings: Settings) -> None:
    """Only sources that passed the gate are cached; re-check it in case this deployment's limits differ."""
    if summary["face_coverage"] < settings.min_face_coverage:
        raise InputError(ErrorCode.no_face, f"a face was found in {summary['face_coverage']:.0%} of frames; "
                                            f"at least {settings.min_face_coverage:.0%} are needed")
    if summary["face_px"] < settings.min_face_px:
        raise InputError(ErrorCode.face_too_small, f"the face is {summary['face_px']:.0f} px; "
                                                   f"at least {settings.min_face_px} px are needed")
