"""SSRF guard and limited downloads (lipdub.service.urls), against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lipdub.config import Settings
from lipdub.service.urls import FetchFailed, UrlRejected, check_url, fetch_to_file

LOOPBACK_OK = ["127.0.0.0/8"]


class _Handler(BaseHTTPRequestHandler):
    seen_hosts: list[str] = []

    def log_message(self, *_: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).seen_hosts.append(self.headers.get("Host", ""))
        port = self.server.server_address[1]  # type: ignore[index]  # an AF_INET server: (host, port)
        if self.path == "/file":
            body = b"x" * 5000
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/unsized":  # no Content-Length: the size limit must hold while streaming
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(50):
                self.wfile.write(b"y" * 1000)
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(0.05)
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{port}/file")
            self.end_headers()
        elif self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.seen_hosts = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("url, code", [
    ("ftp://example.com/a.mp4", "url_scheme_not_allowed"),
    ("file:///etc/passwd", "url_scheme_not_allowed"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "url_scheme_not_allowed"),
    ("http://user:pw@93.184.216.34/a.mp4", "invalid_url"),
    ("http:///nohost", "invalid_url"),
    ("http://127.0.0.1/a", "url_not_allowed"),
    ("http://127.1.2.3:8080/a", "url_not_allowed"),
    ("http://[::1]/a", "url_not_allowed"),
    ("http://[::ffff:127.0.0.1]/a", "url_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "url_not_allowed"),
    ("http://[fe80::1]/a", "url_not_allowed"),
    ("http://10.0.0.5/a", "url_not_allowed"),
    ("http://172.16.3.4/a", "url_not_allowed"),
    ("http://192.168.1.1/a", "url_not_allowed"),
    ("http://100.64.0.1/a", "url_not_allowed"),
    ("http://[fd00:ec2::254]/a", "url_not_allowed"),
    ("http://0.0.0.0/a", "url_not_allowed"),
    ("http://224.0.0.1/a", "url_not_allowed"),
    ("http://localhost:9/a", "url_not_allowed"),  # a name, resolved: loopback
])
def test_blocked_urls(tmp_path: Path, url: str, code: str) -> None:
    with pytest.raises(UrlRejected) as info:
        check_url(url, _settings(tmp_path))
    assert info.value.code == code


def test_public_literal_is_accepted_and_allow_list_opens_loopback_only(tmp_path: Path) -> None:
    target = check_url("https://93.184.216.34/v.mp4", _settings(tmp_path))
    assert str(target.address) == "93.184.216.34" and target.port == 443
    allowed = _settings(tmp_path, outbound_allow_networks=LOOPBACK_OK)
    assert str(check_url("http://localhost:8080/x", allowed).address).startswith("127.")
    with pytest.raises(UrlRejected):  # the allow-list opens 127/8, not the metadata address
        check_url("http://169.254.169.254/", allowed)


def test_fetch_streams_with_hash_and_follows_checked_redirects(tmp_path: Path, server: str) -> None:
    settings = _settings(tmp_path, outbound_allow_networks=LOOPBACK_OK)
    got = fetch_to_file(f"{server}/to-file", tmp_path / "in.bin", settings)
    assert got.size == 5000 and got.path.read_bytes() == b"x" * 5000
    import hashlib

    assert got.sha256 == hashlib.sha256(b"x" * 5000).hexdigest()
    with pytest.raises(UrlRejected) as info:  # a redirect hop into the metadata service is refused
        fetch_to_file(f"{server}/to-metadata", tmp_path / "m.bin", settings)
    assert info.value.code == "url_not_allowed"


def test_fetch_size_and_time_limits(tmp_path: Path, server: str) -> None:
    small = _settings(tmp_path, outbound_allow_networks=LOOPBACK_OK, download_max_bytes=1000)
    for path in ("/file", "/unsized"):  # declared too large, and too large while streaming
        with pytest.raises(FetchFailed) as info:
            fetch_to_file(f"{server}{path}", tmp_path / "big.bin", small)
        assert info.value.code == "download_too_large"
        assert not (tmp_path / "big.bin").exists() and not (tmp_path / "big.bin.part").exists()
    quick = _settings(tmp_path, outbound_allow_networks=LOOPBACK_OK, download_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(FetchFailed) as info:
        fetch_to_file(f"{server}/slow", tmp_path / "slow.bin", quick)
    assert info.value.code == "download_timeout" and time.monotonic() - started < 3.0


def test_dns_rebinding_resolves_once_and_connects_to_the_checked_address(
        tmp_path: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile DNS answers 127.0.0.1 (allowed here) first and 10.0.0.1 afterwards: the download must use
    the first, checked answer and never ask again; the real host name still goes in the Host header."""
    port = int(server.rsplit(":", 1)[1])
    answers = iter(["127.0.0.1", "10.0.0.1", "10.0.0.1"])
    calls: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_dns(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "media.example.test":  # IP literals (the pinned address) resolve as usual
            return real_getaddrinfo(host, *args, **kwargs)
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    settings = _settings(tmp_path, outbound_allow_networks=LOOPBACK_OK)
    got = fetch_to_file(f"http://media.example.test:{port}/file", tmp_path / "r.bin", settings)
    assert got.size == 5000
    assert calls == ["media.example.test"]
    assert _Handler.seen_hosts == [f"media.example.test:{port}"]


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    import subprocess

    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.parametrize("cert_name, ok", [("media.example.test", True), ("other.example.test", False)])
def test_https_to_the_pinned_address_keeps_sni_and_verifies_the_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cert_name: str, ok: bool) -> None:
    """The connection goes to the checked IP, but TLS still sends the host name (SNI) and the certificate
    must be valid for that name: a server with another name's certificate is refused."""
    import ssl

    import certifi

    cert, key = _self_signed(tmp_path, cert_name)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    _Handler.seen_hosts = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    port = httpd.server_address[1]
    real_getaddrinfo = socket.getaddrinfo

    def dns(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        if host == "media.example.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.setattr(certifi, "where", lambda: str(cert))  # trust the test certificate only
    settings = _settings(tmp_path, outbound_allow_networks=LOOPBACK_OK)
    try:
        if ok:
            got = fetch_to_file(f"https://media.example.test:{port}/file", tmp_path / "tls.bin", settings)
            assert got.size == 5000
            assert _Handler.seen_hosts == [f"media.example.test:{port}"]
        else:
            with pytest.raises(FetchFailed) as info:
                fetch_to_file(f"https://media.example.test:{port}/file", tmp_path / "tls.bin", settings)
            assert "CERTIFICATE_VERIFY_FAILED" in info.value.message, info.value.message
            assert _Handler.seen_hosts == []
        assert sni and sni[0] == "media.example.test"
    finally:
        httpd.shutdown()
        httpd.server_close()
