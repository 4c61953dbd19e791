"""HTTP/1.1 requests for the registry client, on the standard library's `http.client`.

Input: a method, an absolute URL, headers, an optional body, the TLS trust to use (a CA bundle path, the
default roots, or none); output: a `Response` whose body is read (or streamed, byte-exact) by the caller.

Why our own and not requests: the registry client (registry.py) already does everything requests would
add on top of a connection: its own retries, redirects, auth and error mapping. What requests and urllib3
cost is start-up: the imports of a pull process went from 162 to 114 ms without them, and a warm
`pull` from 230 to 170 ms (docs/performance.md "Pull"). What is left here is small: one idle-connection pool per thread
(keep-alive), TLS contexts, timeouts, proxies from the environment, and Content-Encoding decoding.

Rules kept from the requests-based transport it replaces:
- Trust is explicit per request: `verify` is a CA bundle path, True (the certifi roots, as before) or
  False. No environment variable changes it here (REQUESTS_CA_BUNDLE is read in registry.py, once, as
  the documented default), and no ~/.netrc is read.
- Proxies come from the environment (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), as curl and requests take them.
- Nothing is decoded unless asked: blob streams are byte-exact (their digest is checked over the raw bytes).
- No redirect is followed here; registry.py follows them itself (credentials are dropped across hosts).

Errors: every failure to connect, send or receive is a `TransportError` (`TLSError` for certificate
problems), with `refused` set when the TCP connection was refused.
"""

from __future__ import annotations

import base64
import functools
import http.client
import os
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import open_file_limit_hint

if TYPE_CHECKING:
    import ssl

# A request body made anew for each attempt (a stream cannot be sent twice): bytes, or an iterable of
# bytes with a length (sent with Content-Length, never chunked: registries refuse chunked uploads).
Body = Callable[[], Any]
_Key = tuple[str, str, int, "str | bool", "tuple[str, int] | None"]  # scheme, host, port, verify, proxy


class TransportError(Exception):
    """The request could not be sent or its answer not received (connection, timeout, broken stream)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused

    @property
    def out_of_descriptors(self) -> str | None:
        """When this process ran out of file descriptors making the connection (EMFILE, ENFILE), what
        to do about it (errors.TooManyOpenFilesError's hint); else None. No retry can help then."""
        cause = self.__context__  # the OSError this error replaced (`raise ... from None`)
        return open_file_limit_hint(cause) if isinstance(cause, OSError) else None


class TLSError(TransportError):
    """The server's certificate was not trusted, or the TLS handshake failed."""


def _error(exc: BaseException) -> TransportError:
    """Our error for what http.client, socket or ssl raised; the OS's words, without a traceback."""
    import ssl

    name = type(exc).__name__
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return TLSError(f"{name}: {exc}")
    return TransportError(f"{name}: {exc}" if str(exc) else name, refused=isinstance(exc, ConnectionRefusedError))


_FAILURES = (OSError, http.client.HTTPException)  # ssl.SSLError and socket.timeout are OSErrors
_DRAIN = 64 << 10  # unread bodies up to this size are read on close, so the connection can be kept


class Response:
    """An HTTP answer: its status and headers; the body is read once with `stream`, then `close`."""

    def __init__(self, raw: http.client.HTTPResponse, release: Callable[[bool], None]) -> None:
        self._raw, self._release = raw, release
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive `get`, `in` and `[]`
        self._closed = False

    def stream(self, chunk_size: int, *, decode: bool = False) -> Iterator[bytes]:
        """The body in chunks of at most `chunk_size` bytes; decoded by Content-Encoding only if `decode`."""
        decoder = _decoder(self.headers.get("Content-Encoding", "")) if decode else None
        try:
            while chunk := self._raw.read(chunk_size):
                if decoder is not None:
                    chunk = decoder.decompress(chunk)
                    if not chunk:
                        continue
                yield chunk
            if self._raw.length:  # http.client's read(n) returns b"" at an early end instead of raising
                raise TransportError(f"IncompleteRead: the connection ended {self._raw.length} bytes before the "
                                     "end of the body")
            if decoder is not None and (rest := decoder.flush()):
                yield rest
        except zlib.error as exc:
            raise TransportError(f"undecodable {self.headers.get('Content-Encoding')} body: {exc}") from None
        except _FAILURES as exc:
            raise _error(exc) from None

    def close(self) -> None:
        """Done with this answer: its connection is kept for the next request only if the body was read to
        the end (an unread rest would be taken for the next answer)."""
        if self._closed:
            return
        self._closed = True
        unread = self._raw.length  # None: unknown (chunked), so not drained
        if not self._raw.isclosed() and not self._raw.will_close and unread is not None and unread <= _DRAIN:
            try:  # a short unread body (an answer to a PUT, an error page): read it, keep the connection
                self._raw.read()
            except _FAILURES:
                pass
        reusable = self._raw.isclosed() and not self._raw.will_close
        if not reusable:
            self._raw.close()
        self._release(reusable)


def _decoder(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None  # identity (or an encoding we did not ask for: the caller's digest or parser refuses it)


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    authorization: str | None  # Proxy-Authorization for user:password@ in the proxy URL


def _environ_proxy(scheme: str, host: str) -> _Proxy | None:
    """The proxy the environment names for `scheme`://`host`, unless NO_PROXY exempts the host."""
    names = (f"{scheme}_proxy", "all_proxy")
    if not any(os.environ.get(n) or os.environ.get(n.upper()) for n in names):
        return None  # the common case: urllib.request (~10 ms) is not imported
    import urllib.request

    url = urllib.request.getproxies().get(scheme) or urllib.request.getproxies().get("all")
    if not url or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    authorization = None
    if parts.username is not None:
        raw = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(raw).decode()
    return _Proxy(parts.hostname or "", parts.port or 80, authorization)


_contexts: dict[str | bool, ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _tls_context(verify: str | bool) -> ssl.SSLContext:
    """One context per trust setting, made once (loading a CA bundle takes milliseconds)."""
    import ssl

    with _contexts_lock:
        context = _contexts.get(verify)
        if context is None:
            if verify is False:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            else:
                cafile = verify if isinstance(verify, str) else _default_roots()
                try:
                    if isinstance(verify, str) and os.path.isdir(verify):
                        context = ssl.create_default_context(capath=verify)
                    else:
                        context = ssl.create_default_context(cafile=cafile)
                except (OSError, ssl.SSLError) as exc:
                    raise TLSError(f"cannot load the CA bundle {cafile}: {exc}") from None
            _contexts[verify] = context
        return context


def _default_roots() -> str | None:
    """The certifi roots (what the transport trusted before, so an upgrade changes no trust), else the
    system's."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi is a dependency; the system roots are the fallback
        return None
    return str(certifi.where())


class Transport:
    """Connections kept alive between requests; one `Transport` per thread (not thread-safe)."""

    def __init__(self, *, connect_timeout: float, read_timeout: float) -> None:
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._idle: dict[_Key, list[http.client.HTTPConnection]] = {}

    def request(self, method: str, url: str, headers: dict[str, str], *, body: Body | None = None,
                verify: str | bool = True, timeout: float | None = None) -> Response:
        """Send one request and return its answer (status and headers read; the body not yet).

        A kept-alive connection the server has closed meanwhile is replaced once, with a fresh body.
        `timeout` replaces both timeouts for this request alone (a best-effort request that must not wait long).

        Raises:
            TransportError, TLSError.
        """
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = _environ_proxy(scheme, host)
        key: _Key = (scheme, host, port, verify if scheme == "https" else False,
                     (proxy.host, proxy.port) if proxy else None)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        headers = dict(headers)
        if proxy and scheme == "http":  # a plain-HTTP proxy takes the absolute URL
            path = urllib.parse.urlunsplit((scheme, parts.netloc.rpartition("@")[2], path, "", ""))
            if proxy.authorization:
                headers["Proxy-Authorization"] = proxy.authorization
        for fresh in (False, True):
            idle = self._idle.get(key)
            conn = idle.pop() if idle and not fresh else self._connect(key, proxy)
            reused = conn.sock is not None
            try:
                if conn.sock is None:
                    if timeout is not None:
                        conn.timeout = min(self.connect_timeout, timeout)
                    conn.connect()  # with the connect timeout; then each read may wait the read timeout
                # Set on every request: a kept-alive connection may carry an earlier request's timeout.
                wait = self.read_timeout if timeout is None else timeout
                conn.sock.settimeout(wait)
                data = body() if body else None
                if data is not None and not isinstance(data, bytes | bytearray):
                    headers["Content-Length"] = str(len(data))
                conn.request(method, path, body=data, headers=headers)
                raw = conn.getresponse()
            except _FAILURES as exc:
                conn.close()
                if reused and not fresh and isinstance(exc, http.client.RemoteDisconnected | BrokenPipeError |
                                                       ConnectionResetError):
                    continue  # the server closed an idle connection: one fresh try
                raise _error(exc) from None
            except BaseException:
                # The body could not be made or read (the bundle, Ctrl-C): a request may be half sent on
                # this connection, which nothing may use again. Closed, the server sees the request end.
                conn.close()
                raise
            if method == "HEAD":
                raw.read()  # no body: the connection is free again at once
            return Response(raw, functools.partial(self._release, key, conn))
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _connect(self, key: _Key, proxy: _Proxy | None) -> http.client.HTTPConnection:
        scheme, host, port, verify, _ = key
        target = (proxy.host, proxy.port) if proxy else (host, port)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(*target, timeout=self.connect_timeout, context=_tls_context(verify))
            if proxy:
                tunnel = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
                conn.set_tunnel(host, port, headers=tunnel)
        else:
            conn = http.client.HTTPConnection(*target, timeout=self.connect_timeout)
        return conn

    def _release(self, key: _Key, conn: http.client.HTTPConnection, reusable: bool) -> None:
        """A response is done with `conn`: kept idle for the next request to the same place, or closed."""
        if reusable and conn.sock is not None:
            self._idle.setdefault(key, []).append(conn)
        else:
            conn.close()
