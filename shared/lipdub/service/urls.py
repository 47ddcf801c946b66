"""Outbound HTTP to user-given URLs (input downloads, webhook targets), safe against SSRF.

A URL is accepted only with scheme http(s), no credentials, and a host whose every resolved address is
public. Loopback, private (RFC 1918, ULA, CGNAT), link-local (which holds the cloud metadata endpoint
169.254.169.254), multicast, unspecified and reserved addresses are refused unless a network in
`Settings.outbound_allow_networks` covers them (the tests allow 127.0.0.0/8).

DNS rebinding: the host is resolved once, the addresses are checked, and the connection goes to that
checked address, with the original Host header and TLS SNI/certificate name. A second lookup, which an
attacker's DNS could answer with 127.0.0.1, never happens. Redirects are not followed blindly: input
downloads re-check every hop, webhook deliveries treat 3xx as a failure (Standard Webhooks).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from lipdub.config import Settings

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# 100.64.0.0/10 (carrier-grade NAT) is shared address space, not "private" to the ipaddress module, but
# it reaches provider-internal hosts all the same.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class UrlRejected(ValueError):
    """The URL may not be fetched or called; `code` is the API error code, `message` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FetchFailed(RuntimeError):
    """The download failed (network, HTTP status, too big, too slow); `code` is the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Target:
    """A checked URL and the one address the request will connect to."""

    url: str
    scheme: str
    host: str  # as written in the URL (Host header, SNI, certificate name)
    port: int
    address: IpAddress

    def pinned_url(self) -> str:
        """The URL with the host replaced by the checked address (IPv6 in brackets)."""
        parts = urlsplit(self.url)
        literal = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return parts._replace(netloc=f"{literal}:{self.port}").geturl()

    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@lru_cache(maxsize=16)
def _allowed(networks: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def blocked_reason(address: IpAddress, allow: tuple[IpNetwork, ...] = ()) -> str | None:
    """Why `address` may not be contacted, or None when it is public (or explicitly allowed)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in net for net in allow):
        return None
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local (cloud metadata lives here)"
    if address.is_unspecified:
        return "unspecified"
    if address.is_multicast:
        return "multicast"
    if address.version == 4 and address in _SHARED:
        return "shared (carrier-grade NAT)"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def check_url(url: str, settings: Settings, *, resolve: bool = True) -> Target:
    """Parse and check `url`, resolve its host once, and return the address to connect to.

    With resolve=False only the syntax (and a literal IP host) is checked: the API does that on requests
    so a bad URL is a 4xx right away, while the lookup happens when the URL is used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRejected("invalid_url", f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRejected("url_scheme_not_allowed", f"only http and https URLs are accepted, not {scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise UrlRejected("invalid_url", "URLs with credentials (user:password@) are not accepted")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRejected("invalid_url", "the URL has no host")
    port = port or (443 if scheme == "https" else 80)
    allow = _allowed(tuple(settings.outbound_allow_networks))
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    elif not resolve:
        return Target(url, scheme, host, port, ipaddress.ip_address("0.0.0.0"))
    else:
        addresses = _resolve(host, port)
    for address in addresses:
        reason = blocked_reason(address, allow)
        if reason is not None:
            # Every address is checked, not only the one used: a name that resolves to a public and a
            # private address is refused rather than left to chance.
            raise UrlRejected("url_not_allowed", f"{host} resolves to a {reason} address ({address}); "
                                                 "such targets are not allowed")
    return Target(url, scheme, host, port, addresses[0])


def _resolve(host: str, port: int) -> list[IpAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRejected("url_unresolvable", f"cannot resolve {host}: {exc}") from exc
    addresses: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])  # drop an IPv6 zone id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UrlRejected("url_unresolvable", f"{host} has no address")
    return addresses


def pinned_request(client: httpx.Client, method: str, target: Target, **kwargs: object) -> httpx.Request:
    """A request to `target`'s checked address that still says the real host in Host and TLS SNI (so
    virtual hosts work and the certificate is verified against the host name, not the IP)."""
    headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
    headers["Host"] = target.host_header()
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.build_request(method, target.pinned_url(), headers=headers,
                                extensions=extensions, **kwargs)  # type: ignore[arg-type]


def client(settings: Settings, timeout: float) -> httpx.Client:
    """An httpx client for user-given URLs: no redirects followed, no proxies or .netrc from the
    environment (trust_env=False), so nothing but the pinned address is ever contacted."""
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, settings.outbound_connect_timeout)),
                        follow_redirects=False, trust_env=False)


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    content_type: str | None
    url: str  # the final URL after redirects


def fetch_to_file(url: str, dest: Path, settings: Settings) -> Fetched:
    """Download `url` into `dest`, checking every redirect hop, streaming to disk (never in memory),
    within `download_max_bytes` and `download_timeout` seconds in total."""
    deadline = time.monotonic() + settings.download_timeout
    with client(settings, settings.download_timeout) as http:
        for _ in range(settings.download_max_redirects + 1):
            target = check_url(url, settings)
            with _stream(http, target, deadline) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise FetchFailed("download_failed", f"{url}: redirect without a Location")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise FetchFailed("download_failed", f"{url}: HTTP {response.status_code}")
                return _save(response, dest, url, settings, deadline)
    raise FetchFailed("download_failed", f"more than {settings.download_max_redirects} redirects")


@contextmanager
def _stream(http: httpx.Client, target: Target, deadline: float) -> Iterator[httpx.Response]:
    if time.monotonic() > deadline:
        raise FetchFailed("download_timeout", f"{target.url}: time limit reached")
    try:
        response = http.send(pinned_request(http, "GET", target), stream=True)
    except httpx.HTTPError as exc:
        raise FetchFailed("download_failed", f"{target.url}: {type(exc).__name__}: {exc}") from exc
    try:
        yield response
    finally:
        response.close()


def _save(response: httpx.Response, dest: Path, url: str, settings: Settings, deadline: float) -> Fetched:
    limit = settings.download_max_bytes
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchFailed("download_too_large", f"{url}: {declared} bytes, more than the {limit} allowed")
    digest = hashlib.sha256()
    size = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        with tmp.open("wb") as out:
            for chunk in response.iter_bytes():  # as received: a chunk size would buffer past the deadline
                size += len(chunk)
                if size > limit:  # the Content-Length may be absent or lie
                    raise FetchFailed("download_too_large", f"{url}: more than the {limit} bytes allowed")
                if time.monotonic() > deadline:
                    raise FetchFailed("download_timeout",
                                      f"{url}: not finished within {settings.download_timeout:g} s")
                digest.update(chunk)
                out.write(chunk)
        tmp.replace(dest)
    except httpx.HTTPError as exc:
        raise FetchFailed("download_failed", f"{url}: {type(exc).__name__}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return Fetched(dest, size, digest.hexdigest(), response.headers.get("content-type"), url)
