"""Both storage backends behave the same: the local directory and S3 (moto's real HTTP server)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lipdub.config import Settings
from lipdub.digest import sha256_file
from lipdub.errors import TransientError
from lipdub.service import processes
from lipdub.service.stack import wait_ready
from lipdub.service.storage import LocalStorage, MissingObject, S3Storage, Storage, keys
from tests.service.conftest import free_port


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    proc = processes.s3_server(port=port)
    exe = Path(sys.executable).parent / proc.argv[0]
    server = subprocess.Popen([str(exe), *proc.argv[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready("moto_server", lambda: httpx.get(url, timeout=1) is not None, 30, server)
    yield url
    server.terminate()
    server.wait(10)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    settings = Settings(storage="s3", s3_endpoint_url=request.getfixturevalue("s3_endpoint"),
                        s3_bucket=f"test-{tmp_path.name.lower().replace('_', '-')[:40]}",
                        s3_access_key_id="test", s3_secret_access_key="test")
    s3 = S3Storage(settings)
    s3.ensure_bucket()
    return s3


def test_round_trip(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"lipdub" * 100_000)
    key = keys.asset(sha256_file(src))
    assert not storage.exists(key)
    storage.put_file(key, src)
    storage.put_file(key, src)  # writing the same key again is harmless (tasks may re-run)
    assert storage.exists(key) and storage.size(key) == src.stat().st_size
    got = storage.get_file(key, tmp_path / "out" / "copy.bin")
    assert got.read_bytes() == src.read_bytes()
    assert b"".join(storage.stream(key)) == src.read_bytes()
    storage.copy(key, keys.job("job_1", "copy.bin"))
    assert storage.size(keys.job("job_1", "copy.bin")) == src.stat().st_size
    storage.delete(key)
    assert not storage.exists(key)
    storage.ping()


def test_missing_object(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(MissingObject):
        storage.get_file("jobs/nope/result.mp4", tmp_path / "x")
    with pytest.raises(MissingObject):
        storage.size("jobs/nope/result.mp4")
    assert not (tmp_path / "x").exists()  # nothing half-written is left behind


def test_download_urls(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "result.mp4"
    src.write_bytes(b"\0" * 1000)
    storage.put_file(keys.result("job_2"), src, "video/mp4")
    url = storage.download_url(keys.result("job_2"), "job_2.mp4")
    if isinstance(storage, LocalStorage):
        assert url is None  # the API streams local files itself
    else:
        assert url is not None
        response = httpx.get(url)
        assert response.status_code == 200 and response.content == src.read_bytes()
        assert 'filename="job_2.mp4"' in response.headers["content-disposition"]


def test_local_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalStorage(tmp_path / "root").path("../outside")


def test_unreachable_s3_is_transient(tmp_path: Path) -> None:
    settings = Settings(storage="s3", s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
                        s3_access_key_id="test", s3_secret_access_key="test")
    with pytest.raises(TransientError):
        S3Storage(settings).ping()


def test_presigned_urls_use_the_public_endpoint(s3_endpoint: str, tmp_path: Path) -> None:
    """Services may reach S3 at another address than clients do (compose: minio:9000 vs localhost:9000)."""
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    settings = Settings(storage="s3", s3_endpoint_url=s3_endpoint, s3_public_endpoint_url=public,
                        s3_bucket="test-public", s3_access_key_id="test", s3_secret_access_key="test")
    storage = S3Storage(settings)
    storage.ensure_bucket()
    src = tmp_path / "result.mp4"
    src.write_bytes(b"\1" * 500)
    storage.put_file(keys.result("job_3"), src)
    url = storage.download_url(keys.result("job_3"), "job_3.mp4")
    assert url is not None and url.startswith(public + "/")
    assert httpx.get(url).content == src.read_bytes()


def test_delete_tree_deletes_one_jobs_files_only(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"lipdub")
    for key in (keys.result("job_1"), keys.part("job_1", 3), keys.result("job_10"), keys.asset("a" * 64)):
        storage.put_file(key, src)
    assert storage.delete_tree(keys.job_files("job_1")) == 2
    assert not storage.exists(keys.result("job_1")) and not storage.exists(keys.part("job_1", 3))
    assert storage.exists(keys.result("job_10")) and storage.exists(keys.asset("a" * 64))
    assert storage.delete_tree(keys.job_files("job_1")) == 0


def test_delete_tree_by_name_prefix_deletes_every_prep_entry_of_one_source(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"lipdub")
    sha, other = "a" * 64, "b" * 64
    mine = [keys.prep(sha, "3x", "track.json"), keys.prep(sha, "2y", "track.json"),
            keys.prep(f"{sha}-0123456789ab", "3x", "refs.npz")]  # other prep versions, a face choice
    kept = [keys.prep(other, "3x", "track.json"), keys.asset(sha)]
    for key in mine + kept:
        storage.put_file(key, src)
    assert storage.delete_tree(keys.prep_of(sha)) == 3
    assert not any(storage.exists(k) for k in mine)
    assert all(storage.exists(k) for k in kept)
    assert storage.delete_tree(keys.prep_of(sha)) == 0
