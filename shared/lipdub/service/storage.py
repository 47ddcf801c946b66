"""Object storage behind one interface: S3 (boto3; MinIO, AWS, moto or any S3 API) or a local directory.

Keys are deterministic (see `keys`), so re-running a task overwrites its own output and never leaves a
half-written object behind: S3 PUTs are atomic (an object appears whole or not at all) and the local
backend writes a temporary name and renames it.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import suppress
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from lipdub.config import Settings, get_settings
from lipdub.errors import ErrorCode, LipdubError, TransientError

log = logging.getLogger(__name__)

READ_BLOCK = 1024 * 1024  # bytes per read when streaming or hashing


class PartsRejected(ValueError):
    """S3 would not assemble a multipart upload from the parts named (wrong, missing or too small parts): the
    client's mistake, which it can mend by completing again with the right ETags."""


# S3's answers to a CompleteMultipartUpload whose part list is wrong; retrying the same request never helps.
_PART_ERRORS = ("InvalidPart", "InvalidPartOrder", "EntityTooSmall", "MalformedXML", "NoSuchUpload")


class MissingObject(LipdubError):
    """A key that should exist does not (a lost artifact: our failure, not the caller's)."""

    def __init__(self, key: str) -> None:
        super().__init__(ErrorCode.internal, f"storage object {key} is missing")
        self.key = key

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (MissingObject, (self.key,))


class keys:  # a namespace of key builders, read as keys.asset(...)
    """Every storage key the service writes. Prep artifacts are keyed by source content, so every job
    on the same source bytes (any tenant, any language) reuses them."""

    @staticmethod
    def asset(sha256: str) -> str:
        return f"assets/{sha256}"

    @staticmethod
    def prep(source: str, version: str, name: str) -> str:
        """`source`: lipdub.prep.cache.source_key (the video's SHA-256, plus the face choice if any)."""
        return f"prep/{source}-v{version}/{name}"

    @staticmethod
    def job(job_id: str, name: str) -> str:
        return f"{keys.job_files(job_id)}{name}"

    @staticmethod
    def prep_of(sha256: str) -> str:
        """The prefix of every prep entry of these bytes (any face choice, any prep version)."""
        return f"prep/{sha256}"

    @staticmethod
    def job_files(job_id: str) -> str:
        """The prefix of every file of a job (deleted with its record: lipdub.service.janitor)."""
        return f"jobs/{job_id}/"

    @staticmethod
    def mouth(job_id: str) -> str:
        return f"jobs/{job_id}/audio/mouth.npz"

    @staticmethod
    def part(job_id: str, index: int) -> str:
        return f"jobs/{job_id}/render/part-{index:04d}.mp4"

    @staticmethod
    def result(job_id: str) -> str:
        return f"jobs/{job_id}/result.mp4"

    @staticmethod
    def upload(upload_id: str) -> str:
        return f"uploads/{upload_id}"

    @staticmethod
    def manifest(manifest_id: str) -> str:
        """An uploaded batch manifest (deleted when its record expires: lipdub.service.janitor)."""
        return f"batches/manifests/{manifest_id}.jsonl"

    @staticmethod
    def batch(batch_id: str, name: str) -> str:
        """A batch's own files: `input.jsonl` (inline items), `output.jsonl`, `errors.jsonl`."""
        return f"{keys.batch_files(batch_id)}{name}"

    @staticmethod
    def batch_files(batch_id: str) -> str:
        """The prefix of every file of a batch (deleted with its record: lipdub.service.janitor)."""
        return f"batches/{batch_id}/"


class Storage(Protocol):
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None: ...
    def get_file(self, key: str, path: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def delete_tree(self, prefix: str) -> int: ...
    def stream(self, key: str) -> Iterator[bytes]: ...
    def download_url(self, key: str, filename: str) -> str | None: ...
    def copy(self, src: str, dst: str) -> None: ...
    def ping(self) -> None: ...
    def ensure_bucket(self) -> None: ...


class LocalStorage:
    """A directory tree (the embedded default, and single-machine deployments)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"storage key escapes the root: {key}")
        return path

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        dst = self.path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)

    def get_file(self, key: str, path: Path) -> Path:
        src = self.path(key)
        if not src.is_file():
            raise MissingObject(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        return path

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self.path(key).stat().st_size
        except FileNotFoundError:
            raise MissingObject(key) from None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> int:
        """Delete every key starting with `prefix`, as S3 does: a folder (`jobs/{id}/`) or the start of names
        (`prep/{sha}`: every prep entry of those bytes); returns how many there were."""
        base = self.path(prefix)
        if prefix.endswith("/"):
            roots = [base] if base.is_dir() else []
        else:
            roots = list(base.parent.glob(glob.escape(base.name) + "*")) if base.parent.is_dir() else []
        n = 0
        for root in roots:
            if root.is_dir():
                n += sum(1 for p in root.rglob("*") if p.is_file())
                shutil.rmtree(root, ignore_errors=True)
            else:
                n += 1
                root.unlink(missing_ok=True)
        return n

    def stream(self, key: str) -> Iterator[bytes]:
        if not self.exists(key):
            raise MissingObject(key)
        with self.path(key).open("rb") as f:
            while block := f.read(READ_BLOCK):
                yield block

    def download_url(self, key: str, filename: str) -> str | None:
        return None  # no URL to hand out: the API streams the file itself

    def copy(self, src: str, dst: str) -> None:
        self.put_file(dst, self.path(src))

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise TransientError(ErrorCode.storage_unavailable, f"{self.root} is not writable")

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


class S3Storage:
    """Any S3 API. Network and server errors become TransientError, which the tasks retry."""

    def __init__(self, settings: Settings) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = settings.s3_bucket
        self.presign_seconds = settings.presign_seconds
        self.part_bytes = settings.multipart_part_bytes
        def client(endpoint: str | None) -> Any:
            return boto3.client(
                "s3", endpoint_url=endpoint, region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key_id, aws_secret_access_key=settings.s3_secret_access_key,
                config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5,
                              read_timeout=60, signature_version="s3v4", s3={"addressing_style": "path"}))

        self.client = client(settings.s3_endpoint_url)
        # Presigned URLs are signed for the host clients use, which may differ from the services' one
        # (compose: http://minio:9000 inside, http://localhost:9000 outside).
        public = settings.s3_public_endpoint_url
        self.presigner = client(public) if public and public != settings.s3_endpoint_url else self.client

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise MissingObject(key) from exc
            if code in _PART_ERRORS:
                raise PartsRejected(f"{code}: {exc.response.get('Error', {}).get('Message', '')}") from exc
            raise TransientError(ErrorCode.storage_unavailable, f"S3 {what} {key}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise TransientError(ErrorCode.storage_unavailable, f"S3 {what} {key}: {exc}") from exc

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        self._call("upload", key, self.client.upload_file, str(path), self.bucket, key, ExtraArgs=extra)

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        self._call("upload", key, self.client.upload_fileobj, stream, self.bucket, key)

    def get_file(self, key: str, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            self._call("download", key, self.client.download_file, self.bucket, key, str(tmp))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=key)
        except MissingObject:
            return False
        return True

    def size(self, key: str) -> int:
        head = self._call("head", key, self.client.head_object, Bucket=self.bucket, Key=key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=key)

    def delete_tree(self, prefix: str) -> int:
        """Delete every key under `prefix`; returns how many there were."""
        n = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in self._call("list", prefix, list, pages):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:  # at most 1,000 per page, as many as one DeleteObjects takes
                self._call("delete", prefix, self.client.delete_objects, Bucket=self.bucket,
                           Delete={"Objects": objects, "Quiet": True})
                n += len(objects)
        return n

    def stream(self, key: str) -> Iterator[bytes]:
        body = self._call("get", key, self.client.get_object, Bucket=self.bucket, Key=key)["Body"]
        yield from body.iter_chunks(READ_BLOCK)

    def download_url(self, key: str, filename: str) -> str | None:
        params = {"Bucket": self.bucket, "Key": key,
                  "ResponseContentDisposition": f'attachment; filename="{filename}"'}
        return str(self.presigner.generate_presigned_url("get_object", Params=params,
                                                         ExpiresIn=self.presign_seconds))

    def copy(self, src: str, dst: str) -> None:
        self._call("copy", src, self.client.copy, {"Bucket": self.bucket, "Key": src}, self.bucket, dst)

    def ping(self) -> None:
        self._call("head bucket", self.bucket, self.client.head_bucket, Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        try:
            self.ping()
        except (MissingObject, TransientError):
            self._call("create bucket", self.bucket, self.client.create_bucket, Bucket=self.bucket)

    # Presigned multipart upload: the client PUTs parts straight to S3, the API never sees the bytes.
    def create_multipart(self, key: str, size: int) -> tuple[str, list[str]]:
        upload = self._call("create multipart", key, self.client.create_multipart_upload,
                            Bucket=self.bucket, Key=key)
        n_parts = max(1, -(-size // self.part_bytes))
        urls = [self.presigner.generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": key, "UploadId": upload["UploadId"],
                                   "PartNumber": n}, ExpiresIn=self.presign_seconds)
            for n in range(1, n_parts + 1)]
        return str(upload["UploadId"]), urls

    def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, start=1)]
        self._call("complete multipart", key, self.client.complete_multipart_upload, Bucket=self.bucket,
                   Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts (S3 keeps them, and bills them, until then)."""
        with suppress(PartsRejected):  # NoSuchUpload: completed or aborted already
            self._call("abort multipart", key, self.client.abort_multipart_upload, Bucket=self.bucket, Key=key,
                       UploadId=upload_id)


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        return S3Storage(settings)
    return LocalStorage(settings.data_dir / "storage")


@lru_cache(maxsize=1)
def get_storage() -> Storage:
    return make_storage(get_settings())
