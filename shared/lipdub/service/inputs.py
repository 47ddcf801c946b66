"""Job inputs as assets: store a local file (an upload), or download a URL into one.

Uploads (`POST /v1/assets`), batch items given by URL (the batches.expand task) and single jobs given by
URL (the dub.probe task) all end here, so an input is hashed, probed, stored and held to the tenant's
quotas the same way whichever road it came by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lipdub.digest import sha256_file
from lipdub.errors import InputError
from lipdub.media.probe import MediaInfo, probe
from lipdub.service.assets_store import Asset
from lipdub.service.limits import Quotas
from lipdub.service.status import JobStore
from lipdub.service.storage import Storage, keys
from lipdub.service.urls import FetchFailed, UrlRejected, fetch_to_file


class InputRefused(Exception):
    """An input that can't be used: `code` is the job/item error code (url_not_allowed, download_failed,
    download_timeout, download_too_large, input_unreadable, no_video_stream, input_too_long, ...)."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # Celery pickles task exceptions; keep the code through the round trip.
        return (type(self), (self.code, self.message, self.retryable))


# A failed or slow download may succeed later; a refused URL, a too-large file or a bad file will not.
_RETRYABLE_FETCH = {"download_failed", "download_timeout"}


def describe(info: MediaInfo) -> dict[str, Any]:
    """The `media` field of an asset: what the jobs need to know before accepting it."""
    media: dict[str, Any] = {"format": info.format, "duration": round(info.duration, 3),
                             "kind": "video" if info.video else "audio" if info.audio else "unknown"}
    if info.video:
        media["video"] = {"width": info.video.width, "height": info.video.height,
                          "fps": round(info.video.fps, 3), "codec": info.video.codec}
    if info.audio:
        media["audio"] = {"sample_rate": info.audio.sample_rate, "channels": info.audio.channels,
                          "codec": info.audio.codec}
    return media


def store_asset(path: Path, tenant: str, store: JobStore, storage: Storage) -> Asset:
    """Hash, probe and store one local file as the tenant's asset (content-addressed)."""
    media = describe(probe(path))  # InputError (input_unreadable, empty_input) → 422 with its code
    sha = sha256_file(path)
    size = path.stat().st_size
    with store.assets.holding_content(sha):  # a deletion of the same bytes finishes first
        if not storage.exists(keys.asset(sha)):
            storage.put_file(keys.asset(sha), path)
        return store.assets.put(tenant, sha, size, media)


def delete_asset(asset: Asset, store: JobStore, storage: Storage) -> bool:
    """Delete a tenant's asset now. The stored bytes and every prep artifact made from them (face tracks,
    references, an enrolled renderer) go too unless another asset, of any tenant, holds the same bytes.
    Returns whether they went. Raises TransientError while an upload of the same bytes is being stored."""
    with store.assets.holding_content(asset.sha256):
        last = not store.assets.other_holders(asset)
        store.assets.release_content(asset)  # first: a prep of the bytes still running discards what it makes
        if last:
            store.assets.drop_prep_pointers(asset.sha256)  # no job looks for artifacts being deleted
            storage.delete_tree(keys.prep_of(asset.sha256))
            storage.delete(keys.asset(asset.sha256))
        store.assets.forget(asset)  # last: if storage failed, the asset is still there to delete again
    return last


def fetch_asset(url: str, tenant: str, dest: Path, store: JobStore, storage: Storage) -> Asset:
    """Download `url` (SSRF-safe, lipdub.service.urls) to `dest` and store it as the tenant's asset. Never
    downloads more than the tenant's file-size quota (the deployment's cap may be larger). Raises
    InputRefused with the reason's code."""
    settings = store.settings
    limit = min(settings.download_max_bytes, Quotas(store.r, settings).for_tenant(tenant).max_file_bytes)
    try:
        got = fetch_to_file(url, dest, settings.model_copy(update={"download_max_bytes": limit}))
        return store_asset(got.path, tenant, store, storage)
    except UrlRejected as exc:
        raise InputRefused(exc.code, exc.message) from exc
    except FetchFailed as exc:
        raise InputRefused(exc.code, exc.message, retryable=exc.code in _RETRYABLE_FETCH) from exc
    except InputError as exc:
        raise InputRefused(str(exc.code), exc.message) from exc
    finally:
        dest.unlink(missing_ok=True)


def check_input(kind: str, asset: Asset, tenant: str, store: JobStore) -> None:
    """Raise InputRefused unless `asset` can be the job's `kind` input ("video" or "audio") within the
    tenant's quotas (file size, video length)."""
    quota = Quotas(store.r, store.settings).for_tenant(tenant)
    if kind not in asset.media:
        raise InputRefused(f"no_{kind}_stream", f"{kind}: the file has no {kind} stream")
    if asset.size > quota.max_file_bytes:
        raise InputRefused("payload_too_large", f"{kind}: {asset.size} bytes, more than the "
                                                f"{quota.max_file_bytes} allowed")
    duration = float(asset.media.get("duration") or 0)
    if kind == "video" and duration > quota.max_video_seconds:
        raise InputRefused("input_too_long", f"video: {duration:.1f} s, more than the "
                                             f"{quota.max_video_seconds:g} s allowed")
