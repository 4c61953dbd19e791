"""bundler/transport.py: HTTP on http.client. Proxies from the environment (a real forward proxy, real
registries), kept-alive connections and what happens when a server drops them, bodies cut short,
Content-Encoding, TLS trust."""

from __future__ import annotations

import base64
import gzip
import shutil
import socket
import subprocess
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler.oci import OCI_INDEX
from bundler.reference import ImageRef
from bundler.registry import RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from bundler.transport import TLSError, Transport, TransportError
from tests.support.forward_proxy import ForwardProxy, start_forward_proxy
from tests.support.images import Pusher, multi_platform

INDEX = multi_platform("transport", seed=41)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    started = start_forward_proxy()
    yield started
    started.stop()


def _client(reg: Any, **config: Any) -> RegistryClient:
    routes = plan_routes([reg.host], [RegistryConfig(reg.host, **config)], environ={})
    return RegistryClient(routes, retries=0)


def test_plain_http_goes_through_the_proxy_the_environment_names(registry: Any, proxy: ForwardProxy,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    Pusher.to(registry).push("proxied/app", INDEX, "v1")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    manifest = _client(registry, insecure=True).get_manifest(ImageRef.parse(f"{registry.host}/proxied/app:v1"))
    assert manifest.digest == INDEX.digest and manifest.media_type == OCI_INDEX
    assert proxy.seen == [f"GET http://{registry.host}/v2/proxied/app/manifests/v1"]
    assert proxy.authorizations == [None]
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:pw@"))  # credentials in the URL
    _client(registry, insecure=True).get_manifest(ImageRef.parse(f"{registry.host}/proxied/app:v1"))
    assert proxy.authorizations[1] == "Basic " + base64.b64encode(b"user:pw").decode()


def test_no_proxy_names_hosts_reached_directly(registry: Any, proxy: ForwardProxy,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    Pusher.to(registry).push("proxied/app", INDEX, "v1")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    manifest = _client(registry, insecure=True).get_manifest(ImageRef.parse(f"{registry.host}/proxied/app:v1"))
    assert manifest.digest == INDEX.digest and proxy.seen == []


def test_https_is_tunnelled_with_connect_and_the_proxy_credentials(tls_registry: Any, proxy: ForwardProxy,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    Pusher.to(tls_registry).push("proxied/app", INDEX, "v1")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://pro%40xy:se%3Acret@"))
    client = _client(tls_registry, ca_file=tls_registry.ca_file)
    manifest = client.get_manifest(ImageRef.parse(f"{tls_registry.host}/proxied/app:v1"))
    assert manifest.digest == INDEX.digest
    assert proxy.seen == [f"CONNECT {tls_registry.host}"]  # the proxy sees where, never what
    assert proxy.authorizations == ["Basic " + base64.b64encode(b"pro@xy:se:cret").decode()]


# --- a tiny HTTP/1.1 server whose behaviour each test chooses ---------------------------------------

def _serve(answer: Callable[[socket.socket, bytes], bool],
           ended: threading.Event | None = None) -> tuple[str, list[int]]:
    """A server on 127.0.0.1: for each request read, `answer(conn, request)` writes the reply and says whether
    to keep the connection. Returns its URL and a list counting the connections it accepted. `ended` is set
    when a connection ends (either side closed it)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def connection(conn: socket.socket) -> None:
        with conn:
            while request := conn.recv(65536):
                if not answer(conn, request):
                    break
        if ended is not None:
            ended.set()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            threading.Thread(target=connection, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{server.getsockname()[1]}", accepted


def _ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def _body(resp: Any) -> bytes:
    return b"".join(resp.stream(1 << 20, decode=True))


def _transport() -> Transport:
    return Transport(connect_timeout=5, read_timeout=5)


def test_one_connection_serves_request_after_request() -> None:
    url, accepted = _serve(lambda conn, _: conn.sendall(_ok(b"hello")) or True)
    transport = _transport()
    for _ in range(3):
        resp = transport.request("GET", url + "/x", {})
        assert resp.status_code == 200 and _body(resp) == b"hello"
        resp.close()
    short = transport.request("GET", url + "/unread", {})
    short.close()  # a short body left unread is read on close: the connection stays usable
    assert _body(transport.request("GET", url + "/x", {})) == b"hello"
    assert len(accepted) == 1


def test_empty_answers_to_uploads_keep_the_connection() -> None:
    """A push answers each POST, PATCH and PUT with an empty 201 or 202: none of them may cost a new
    connection (the body is never read: its length is 0)."""
    url, accepted = _serve(lambda conn, _: conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n") or True)
    transport = _transport()
    for _ in range(4):
        resp = transport.request("PUT", url + "/v2/x/blobs/uploads/1", {}, body=lambda: b"data")
        assert resp.status_code == 201
        resp.close()
    assert len(accepted) == 1


def test_a_kept_connection_the_server_closed_meanwhile_is_replaced_once() -> None:
    def once(conn: socket.socket, _: bytes) -> bool:
        conn.sendall(_ok(b"hello"))
        return False  # closes after each answer without saying so (no Connection: close)

    url, accepted = _serve(once)
    transport = _transport()
    bodies = []
    for _ in range(2):
        resp = transport.request("PUT", url + "/x", {}, body=lambda: b"payload")
        bodies.append(_body(resp))
        resp.close()
    assert bodies == [b"hello", b"hello"] and len(accepted) == 2


def test_a_body_cut_short_is_an_error_not_a_short_read() -> None:
    def cut(conn: socket.socket, _: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        return False

    url, _ = _serve(cut)
    resp = _transport().request("GET", url + "/blob", {})
    with pytest.raises(TransportError, match="IncompleteRead: the connection ended 90 bytes before the end of the body"):
        b"".join(resp.stream(4))


def test_a_server_that_stops_sending_times_out_as_a_transport_error() -> None:
    def stall(conn: socket.socket, _: bytes) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        threading.Event().wait(5)  # keeps the connection open, sends nothing more
        return False

    url, _ = _serve(stall)
    resp = Transport(connect_timeout=5, read_timeout=0.3).request("GET", url + "/blob", {})
    with pytest.raises(TransportError, match="^TimeoutError: timed out$"):
        _body(resp)


def test_a_timeout_given_to_one_request_is_for_that_request_alone() -> None:
    """registry.py cancels an upload with a short timeout: the kept connection it used must wait the
    transport's own timeout again for the next request."""
    def answer(conn: socket.socket, request: bytes) -> bool:
        if request.startswith(b"GET /slow"):
            threading.Event().wait(0.6)
        conn.sendall(_ok(b"hello"))
        return True

    url, accepted = _serve(answer)
    transport = Transport(connect_timeout=5, read_timeout=5)
    transport.request("GET", url + "/x", {}, timeout=0.3).close()
    resp = transport.request("GET", url + "/slow", {})  # the same connection, 5 s again
    assert _body(resp) == b"hello" and len(accepted) == 1
    resp.close()
    with pytest.raises(TransportError, match="^TimeoutError: timed out$"):
        transport.request("GET", url + "/slow", {}, timeout=0.3)


def test_a_body_that_fails_midway_closes_its_connection() -> None:
    """An exception from the body (the bundle unreadable, Ctrl-C) leaves a request half sent: the
    connection is closed at once, so the server sees the request end, and is never used again."""
    ended = threading.Event()
    url, accepted = _serve(lambda conn, request: True, ended)  # reads, never answers
    stopped = KeyboardInterrupt()

    class Failing:
        def __len__(self) -> int:
            return 10

        def __iter__(self) -> Iterator[bytes]:
            yield b"12345"
            raise stopped

    transport = _transport()
    with pytest.raises(KeyboardInterrupt) as info:
        transport.request("PATCH", url + "/v2/x/blobs/uploads/1", {}, body=Failing)
    assert info.value is stopped
    assert ended.wait(5), "the half-sent request's connection is still open"
    assert len(accepted) == 1


def test_deflate_is_decoded_too_whatever_the_chunk_size() -> None:
    text = b"apiVersion: v1\n" * 1000
    packed = zlib.compress(text)
    url, _ = _serve(lambda conn, _: conn.sendall(_ok(packed, "Content-Encoding: deflate\r\n")) or True)
    resp = _transport().request("GET", url, {})
    assert b"".join(resp.stream(7, decode=True)) == text  # 7-byte reads: some decode to nothing yet


def test_a_ca_folder_is_trusted_like_a_ca_file(tls_registry: Any, tmp_path: Path) -> None:
    folder = tmp_path / "ca"
    folder.mkdir()
    shutil.copy(tls_registry.ca_file, folder / "ca.pem")
    subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)  # <hash>.0 links
    assert _transport().request("GET", tls_registry.url + "/v2/", {}, verify=str(folder)).status_code == 200


def test_content_encoding_is_decoded_only_when_asked() -> None:
    packed = gzip.compress(b"apiVersion: v1\n" * 100)
    url, _ = _serve(lambda conn, _: conn.sendall(_ok(packed, "Content-Encoding: gzip\r\n")) or True)
    transport = _transport()
    assert b"".join(transport.request("GET", url, {}).stream(1 << 20)) == packed  # blobs: byte-exact
    assert _body(transport.request("GET", url, {})) == b"apiVersion: v1\n" * 100
    damaged = packed[:10] + b"\x00" * 20 + packed[30:]
    url, _ = _serve(lambda conn, _: conn.sendall(_ok(damaged, "Content-Encoding: gzip\r\n")) or True)
    with pytest.raises(TransportError, match="undecodable gzip body"):
        _body(_transport().request("GET", url, {}))


def test_a_refused_connection_says_so() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(TransportError) as info:
        _transport().request("GET", f"http://127.0.0.1:{port}/v2/", {})
    assert info.value.refused and str(info.value).startswith("ConnectionRefusedError")


def test_tls_trust_is_explicit(tls_registry: Any, tmp_path: Path) -> None:
    transport = _transport()
    resp = transport.request("GET", tls_registry.url + "/v2/", {}, verify=str(tls_registry.ca_file))
    assert resp.status_code == 200
    with pytest.raises(TLSError, match="CERTIFICATE_VERIFY_FAILED"):
        _transport().request("GET", tls_registry.url + "/v2/", {}, verify=True)  # the public roots: not trusted
    assert _transport().request("GET", tls_registry.url + "/v2/", {}, verify=False).status_code == 200
    missing = tmp_path / "nope.pem"
    with pytest.raises(TLSError, match=f"cannot load the CA bundle {missing}"):
        _transport().request("GET", tls_registry.url + "/v2/", {}, verify=str(missing))
