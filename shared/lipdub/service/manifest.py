"""A batch's manifest: its JSONL lines, each checked (`validate_manifest`) into an `Item`, a job to be.

Every line is checked before anything runs (JSON, schema, unique custom_id, assets of the tenant with the
right streams, URLs allowed, options valid, inputs within the tenant's quotas); any error fails the whole
batch with per-line errors {line, code, message} (lipdub.service.batches keeps the batch and its items).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lipdub.config import Settings
from lipdub.jobs import InputRef, JobOptions
from lipdub.prep.cache import source_key
from lipdub.service.assets_store import Asset
from lipdub.service.indexes import now
from lipdub.service.limits import Quotas
from lipdub.service.status import JobStore
from lipdub.service.urls import UrlRejected, check_url

MAX_REPORTED_ERRORS = 1000  # manifest errors kept in the batch record (the count is always exact)


class ItemInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    asset_id: str | None = None
    url: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="after")
    def one_source(self) -> ItemInput:
        if (self.asset_id is None) == (self.url is None):
            raise ValueError("give exactly one of asset_id or url")
        return self


class ManifestLine(BaseModel):
    """One line of the manifest: `{custom_id, video, audio, options?, metadata?}`."""

    model_config = ConfigDict(extra="forbid")
    custom_id: str = Field(min_length=1, max_length=128)
    video: ItemInput
    audio: ItemInput
    options: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)
    delivery_url: str | None = Field(default=None, max_length=4096)  # the item's result is PUT there (delivery)


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Item:
    line: int
    custom_id: str
    video: InputRef  # an asset (asset_id, sha256), or a url until the batch downloads it
    audio: InputRef
    options: JobOptions  # the line's, over the batch's defaults
    metadata: dict[str, str]
    delivery_url: str | None = None

    @property
    def source(self) -> str:
        """The prep this item needs (lipdub.prep.cache.source_key): items sharing it share one prep."""
        return source_key(self.video.digest, self.options.target)  # URL inputs are downloaded by now

    def to_json(self) -> str:
        return json.dumps({"line": self.line, "custom_id": self.custom_id,
                           "video": self.video.model_dump(mode="json", exclude_none=True),
                           "audio": self.audio.model_dump(mode="json", exclude_none=True),
                           "options": self.options.model_dump(mode="json"), "metadata": self.metadata,
                           "delivery_url": self.delivery_url})

    @classmethod
    def from_json(cls, raw: str) -> Item:
        item = json.loads(raw)
        # The stored options are complete (sync_mode, frame_rate included): no setting refills them.
        return cls(item["line"], item["custom_id"], InputRef.model_validate(item["video"]),
                   InputRef.model_validate(item["audio"]), JobOptions.model_validate(item["options"]),
                   item["metadata"], item.get("delivery_url"))


def check_options(given: dict[str, Any]) -> JobOptions:
    """A manifest line's options (defaults from the settings of this process); ValueError naming the field."""
    try:
        return JobOptions.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"options.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from exc


def validate_manifest(lines: Iterable[str], tenant: str, store: JobStore, settings: Settings,
                      defaults: dict[str, Any] | None = None) -> tuple[list[Item], list[LineError]]:
    """Check every line (not stopping at the first error): JSON, schema, unique custom_id, assets of the
    tenant with the right streams, URLs allowed, options valid, inputs within the tenant's quotas."""
    quota = Quotas(store.r, settings).for_tenant(tenant)
    items: list[Item] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    assets: dict[str, Asset | None] = {}
    count = 0
    for count, text in enumerate(lines, start=1):
        if count > settings.batch_max_lines:
            errors.append(LineError(count, "too_many_lines", f"a manifest has at most "
                                                             f"{settings.batch_max_lines} lines"))
            break
        if not text.strip():
            errors.append(LineError(count, "empty_line", "empty line"))
            continue
        try:
            parsed = ManifestLine.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_line"
            errors.append(LineError(count, code, f"{where}: {first.get('msg')}" if where else first["msg"]))
            continue
        if parsed.custom_id in seen:
            errors.append(LineError(count, "duplicate_custom_id",
                                    f"custom_id {parsed.custom_id!r} is already used on line {seen[parsed.custom_id]}"))
            continue
        seen[parsed.custom_id] = count
        line_errors: list[LineError] = []
        refs: dict[str, InputRef] = {}
        for kind, ref in (("video", parsed.video), ("audio", parsed.audio)):
            if ref.url is not None:
                try:
                    check_url(ref.url, settings, resolve=False)  # the lookup happens at download time
                except UrlRejected as exc:
                    line_errors.append(LineError(count, exc.code, f"{kind}: {exc.message}"))
                refs[kind] = InputRef(url=ref.url)
                continue
            asset_id = ref.asset_id or ""
            if asset_id not in assets:
                assets[asset_id] = store.assets.get(tenant, asset_id)
            asset = assets[asset_id]
            if asset is None:
                line_errors.append(LineError(count, "asset_not_found", f"{kind}: no asset {asset_id}"))
                continue
            if kind not in asset.media:
                line_errors.append(LineError(count, f"no_{kind}_stream", f"{kind}: asset {asset_id} has no "
                                                                         f"{kind} stream"))
                continue
            if asset.size > quota.max_file_bytes:
                line_errors.append(LineError(count, "payload_too_large", f"{kind}: {asset.size} bytes, more "
                                                                         f"than the {quota.max_file_bytes} allowed"))
            duration = float(asset.media.get("duration") or 0)
            if kind == "video" and duration > quota.max_video_seconds:
                line_errors.append(LineError(count, "input_too_long", f"video: {duration:.1f} s, more than "
                                                                      f"the {quota.max_video_seconds:g} s allowed"))
            refs[kind] = InputRef(asset_id=asset.id, sha256=asset.sha256)
        if parsed.delivery_url is not None:
            try:
                check_url(parsed.delivery_url, settings, resolve=False)  # resolved again on delivery
            except UrlRejected as exc:
                line_errors.append(LineError(count, exc.code, f"delivery_url: {exc.message}"))
        options: JobOptions | None = None
        try:
            options = check_options({**(defaults or {}), **parsed.options})
        except ValueError as exc:
            line_errors.append(LineError(count, "invalid_options", str(exc).splitlines()[0]
                                         if str(exc) else "invalid options"))
        if line_errors or options is None:
            errors.extend(line_errors)
            continue
        items.append(Item(count, parsed.custom_id, refs["video"], refs["audio"], options, parsed.metadata,
                          parsed.delivery_url))
    if count == 0:
        errors.append(LineError(1, "empty_manifest", "the manifest has no lines"))
    store.assets.mark_used([a.id for a in assets.values() if a is not None], now())  # its jobs come later
    return items, errors


def jsonl_lines(chunks: Iterable[bytes], max_line_bytes: int = 1 << 20) -> Iterator[str]:
    """Lines of a JSONL stream (any chunking), decoded; a trailing newline adds no empty line."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace").rstrip("\r")
        if len(buffer) > max_line_bytes:
            yield buffer[:max_line_bytes].decode("utf-8", errors="replace")  # reported as invalid JSON
            buffer = b""
    if buffer.strip():
        yield buffer.decode("utf-8", errors="replace").rstrip("\r")


# --- the batch record --------------------------------------------------------------------------------
