"""Where Clarion may POST on a caller's behalf (status callbacks): http(s) only, and, unless
`CLARION_CALLBACKS_ALLOW_PRIVATE` says otherwise, never an address inside the network.

A callback URL is chosen by whoever holds an API key. Without this check a key could make
Clarion reach the metadata service (169.254.169.254), the database's port on loopback, or any
private host, and read the answer's status in the callback log: server-side request forgery.
The host is resolved and *every* address it resolves to must be public; the check runs when the
URL is registered and again before each POST (a name can be pointed elsewhere later). Redirects
are never followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


def url_problem(url: str) -> str | None:
    """Why `url` is not an acceptable callback URL by its shape (None: it is)."""
    if len(url) > MAX_URL_LENGTH:
        return f"the URL is longer than {MAX_URL_LENGTH} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "the URL does not parse"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs are allowed"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed; sign with the secret instead"
    return None


def is_private(address: str) -> bool:
    """Loopback, link-local, private (RFC 1918, unique local), unspecified, multicast,
    reserved, or an IPv4 address mapped into IPv6 that is one of those."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside IPv6 (mapped, 6to4, Teredo) is judged as that address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return is_private(str(embedded))
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
            or ip.is_multicast or ip.is_reserved or not ip.is_global)


def destination_problem(url: str, allow_private: bool) -> str | None:
    """Why Clarion must not POST to `url` (None: it may). Resolves the host (blocking)."""
    return checked_address(url, allow_private)[0]


def checked_address(url: str, allow_private: bool) -> tuple[str | None, str | None]:
    """(why not, None), or (None, the address to connect to): the host resolved once and every
    address it resolves to checked. The caller connects to that address and no other, so a
    name that resolves elsewhere a moment later (DNS rebinding) cannot take it inside."""
    problem = url_problem(url)
    if problem is not None:
        return problem, None
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"the host {host!r} does not resolve", None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        return f"the host {host!r} does not resolve", None
    if not allow_private and any(is_private(a) for a in addresses):
        return (f"the host {host!r} resolves to a loopback, link-local or private address;"
                " set CLARION_CALLBACKS_ALLOW_PRIVATE=1 to allow it"), None
    return None, addresses[0]
