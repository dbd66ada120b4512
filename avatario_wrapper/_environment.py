"""What the process environment says about reaching Avatario, read once, when a client is made.

Every transport takes these from here, at that moment, the same way: the proxy for the base
URL (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``, unless ``NO_PROXY`` covers the host; never
for a loopback host), with the credentials of its URL kept apart as secrets (they are never
put into a URL a library may show in a message); and the CA certificates TLS trusts
(``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else certifi's bundle, as httpx reads them). A
variable set later changes nothing for a client already made; a pool passed in as
``http_client`` keeps its own settings.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import os
import ssl
import urllib.parse
import urllib.request

from ._inputs import is_loopback_host
from .errors import AvatarioConfigError

CERT_FILE_ENV = "SSL_CERT_FILE"
CERT_DIR_ENV = "SSL_CERT_DIR"


class Proxy:
    """A proxy from the environment: its URL without credentials, and the credentials."""

    __slots__ = ("password", "url", "user", "variable")

    def __init__(self, variable: str, url: str, user: str | None, password: str | None) -> None:
        self.variable = variable
        self.url = url
        self.user = user
        self.password = password

    def __repr__(self) -> str:
        shown = "***@" if self.user is not None else ""
        return f"Proxy({self.variable}: {shown}{self.url})"

    @property
    def is_socks(self) -> bool:
        return self.url.lower().startswith("socks")

    def authorization(self) -> str | None:
        """The ``Proxy-Authorization`` value of the credentials (Basic), or None."""
        if self.user is None:
            return None
        pair = f"{self.user}:{self.password or ''}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def secrets(self) -> tuple[str, ...]:
        """Every form of the credentials a message could carry: the password, ``user:pass``
        and the base64 of the ``Proxy-Authorization`` header."""
        header = self.authorization()
        if header is None:
            return ()
        pair = f"{self.user}:{self.password or ''}"
        return tuple(s for s in (self.password, pair, header.removeprefix("Basic ")) if s)


class Environment:
    """The environment of one client, read when it was made (see the module docstring)."""

    __slots__ = ("cert_dir", "cert_file", "proxy")

    def __init__(self, proxy: Proxy | None, cert_file: str | None, cert_dir: str | None) -> None:
        self.proxy = proxy
        self.cert_file = cert_file
        self.cert_dir = cert_dir

    @classmethod
    def read(cls, base_url: str) -> Environment:
        return cls(
            resolve_proxy(base_url),
            os.environ.get(CERT_FILE_ENV) or None,
            os.environ.get(CERT_DIR_ENV) or None,
        )

    def __repr__(self) -> str:
        return f"Environment(proxy={self.proxy!r}, cert_file={self.cert_file!r})"

    def tls_context(self) -> ssl.SSLContext:
        """The verifying TLS context of the pools a client makes, for these CA locations."""
        return _verifying_context(self.cert_file, self.cert_dir)


@functools.lru_cache(maxsize=4)
def _verifying_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """One verifying context per set of CA locations, shared by every pool the clients make:
    loading a CA bundle costs tens of milliseconds, and a context is safe to share across
    pools, threads and event loops. httpx's own rule: the file, else the folder, else certifi."""
    if cert_file:
        return ssl.create_default_context(cafile=cert_file)
    if cert_dir:
        return ssl.create_default_context(capath=cert_dir)
    import certifi  # noqa: PLC0415 - httpx's own dependency, loaded with its first pool

    return ssl.create_default_context(cafile=certifi.where())


#: Proxy schemes the clients can use; socks needs httpx's ``socks`` extra (socksio).
_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def resolve_proxy(url: str) -> Proxy | None:
    """The proxy the environment names for `url`, or None.

    The same rules for every transport: ``HTTPS_PROXY`` / ``HTTP_PROXY`` by the URL's scheme,
    else ``ALL_PROXY`` (any case), unless ``NO_PROXY`` covers the host. A proxy that no
    transport here can use is an `AvatarioConfigError` naming the variable; one that
    ``NO_PROXY`` bypasses is never looked at.
    """
    proxies = urllib.request.getproxies_environment()
    if not proxies:
        return None
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if is_loopback_host(host):  # the key and the token never leave this machine through one
        return None
    if urllib.request.proxy_bypass(host if parts.port is None else f"{host}:{parts.port}"):
        return None
    for key in (parts.scheme, "all"):
        proxy = proxies.get(key)
        if proxy:
            variable = f"{key.upper()}_PROXY"
            scheme = urllib.parse.urlsplit(proxy).scheme.lower()
            if scheme not in _PROXY_SCHEMES:
                raise AvatarioConfigError(
                    variable,
                    f"proxy scheme {scheme or '(none)'!r} is not supported; use "
                    + ", ".join(f"{s}://" for s in _PROXY_SCHEMES)
                    + " or add the host to NO_PROXY",
                )
            if scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
                raise AvatarioConfigError(
                    variable,
                    "a SOCKS proxy needs the socksio package: pip install 'httpx[socks]' "
                    "(or add the host to NO_PROXY)",
                )
            return _split(variable, proxy)
    return None


def _split(variable: str, proxy: str) -> Proxy:
    """`proxy` without its userinfo, and the userinfo, percent-decoded."""
    parts = urllib.parse.urlsplit(proxy)
    if "@" not in parts.netloc:
        return Proxy(variable, proxy, None, None)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    bare = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    return Proxy(variable, bare, urllib.parse.unquote(user), urllib.parse.unquote(password))
