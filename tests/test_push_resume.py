"""registry.py's chunked uploads resumed in their own session (distribution-spec v1.1: the upload status
GET answers `Range: 0-<last byte received>`), through tests/support/faultproxy.py in front of the real
docker-registry: a PATCH answered 503 or cut mid-body, the closing PUT failing, a registry that forgets
the session, answers with a Range not to trust, or lost the failed request's answer, and retries running
out. Each test reads the blob back from the registry and counts, from the proxy's log, the sessions
opened and the bytes sent.

A session the client gives up (a new one replaces it, or the upload fails for good: retries run out, the
bundle cannot be read, Ctrl-C) is cancelled with one `DELETE <location>` (distribution-spec "Canceling an
Upload"). The tests ask the registry itself, past the proxy, whether the session is still open
(`_session`), and check that a cancel that fails changes nothing about the upload's own error."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bundler import registry as registry_mod
from bundler.errors import DigestMismatchError, RegistryError
from bundler.reference import ImageRef
from bundler.registry import BlobReader, RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from tests.support.faultproxy import Fault, FaultProxy, Request, start_proxy

MIB = 1 << 20
SIZE = 5 * MIB  # 4 PATCHes of 1 MiB, then the closing PUT with the last 1 MiB
UPLOADS = "/blobs/uploads/"
CANCELLED = (404, "BLOB_UPLOAD_UNKNOWN")  # docker-registry's answer for a session that is gone


@pytest.fixture
def proxy(registry: Any) -> Iterator[FaultProxy]:
    p = start_proxy(registry.url)
    yield p
    p.stop()


def _client(host: str, *, retries: int = 2, timeout: float = 60.0) -> RegistryClient:
    routes = plan_routes([host], [RegistryConfig(host, insecure=True)], environ={})
    return RegistryClient(routes, retries=retries, backoff=0.01, sleep=lambda s: None, timeout=timeout)


def _blob(seed: str) -> tuple[bytes, str, BlobReader]:
    data = random.Random(seed).randbytes(SIZE)

    def read(start: int, length: int) -> Iterator[bytes]:
        for at in range(start, start + length, 256 * 1024):
            yield data[at:min(at + 256 * 1024, start + length)]

    return data, "sha256:" + hashlib.sha256(data).hexdigest(), read


def _push(proxy: FaultProxy, repo: str, *faults: Fault, chunk_size: int = MIB,
          retries: int = 2) -> tuple[RegistryClient, ImageRef, str]:
    """Push a fresh 5 MiB blob to `repo` through the proxy with `faults`; returns the client, ref, digest."""
    data, digest, read = _blob(repo)
    for fault in faults:
        proxy.add(fault)
    client = _client(proxy.host, retries=retries)
    ref = ImageRef.parse(f"{proxy.host}/{repo}:1")
    client.push_blob(ref, digest, len(data), read, chunk_size=chunk_size)
    return client, ref, digest


def _served(registry: Any, repo: str, digest: str) -> str:
    """The digest of what the registry itself serves for the blob (read past the proxy)."""
    resp = requests.get(f"{registry.url}/v2/{repo}/blobs/{digest}", timeout=30)
    assert resp.status_code == 200, resp.status_code
    return "sha256:" + hashlib.sha256(resp.content).hexdigest()


def _log(proxy: FaultProxy) -> list[Request]:
    return proxy.requests_to(UPLOADS)


def _session(registry: Any, request: Request) -> tuple[int, str]:
    """What the registry itself (past the proxy) says of the session `request` went to: 204 and its Range
    while it is open, 404 BLOB_UPLOAD_UNKNOWN once it is gone. The request's `_state` must be the session's
    current one: take a request that never reached the registry (a fault answered it)."""
    resp = requests.get(registry.url + request.path.split("&digest=")[0], timeout=30)
    if resp.status_code == 204:
        return 204, resp.headers.get("Range", "")
    return resp.status_code, resp.json()["errors"][0]["code"]


def _deletes(proxy: FaultProxy) -> list[int]:
    return [r.status for r in _log(proxy) if r.method == "DELETE"]


def _failed(proxy: FaultProxy, method: str) -> list[Request]:
    """The `method` requests a fault answered (503) or cut (status 0): none of them reached the registry."""
    return [r for r in _log(proxy) if r.method == method and r.status in (0, 503)]


def _sessions(proxy: FaultProxy) -> int:
    return sum(1 for r in _log(proxy) if r.method == "POST")


def _patches(proxy: FaultProxy) -> list[str | None]:
    return [r.content_range for r in _log(proxy) if r.method == "PATCH"]


def _sent_after_last_failure(proxy: FaultProxy) -> int:
    """Body bytes of the PATCHes and PUTs after the last failed one (status 0: cut, never answered)."""
    log = _log(proxy)
    failed = max(i for i, r in enumerate(log) if r.method in ("PATCH", "PUT") and r.status not in (201, 202))
    return sum(r.received for r in log[failed + 1:] if r.method in ("PATCH", "PUT"))


def _range(start: int, length: int = MIB) -> str:
    return f"{start}-{start + length - 1}"


# 503 from something in front of the registry; the connection cut mid-body (twice: the transport sends a
# request once more on a fresh connection when a kept-alive one breaks under it). Neither reached the
# registry, so the session holds the two PATCHes before.
@pytest.mark.parametrize("kind", ["503", "cut"])
def test_a_failed_patch_resumes_in_the_same_session_sending_only_what_the_registry_lacks(
        kind: str, proxy: FaultProxy, registry: Any, caplog: pytest.LogCaptureFixture) -> None:
    fault = (Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=2) if kind == "503" else
             Fault("cut", match=UPLOADS, methods=("PATCH",), after=300_000, skip=2, times=2))
    repo = f"resume/patch-{kind}"
    with caplog.at_level(logging.INFO, logger="bundler.registry"):
        client, ref, digest = _push(proxy, repo, fault)
    assert _served(registry, repo, digest) == digest
    assert _sessions(proxy) == 1
    tried = [_range(2 * MIB)] * (1 if kind == "503" else 2)
    assert _patches(proxy) == [_range(0), _range(MIB), *tried, _range(2 * MIB), _range(3 * MIB)]
    assert [r.status for r in _log(proxy) if r.method == "GET"] == [204]  # one status request
    assert _sent_after_last_failure(proxy) == SIZE - 2 * MIB
    assert client.stats["retries"] == 1 and client.stats["resumed_bytes"] == 2 * MIB
    assert f"upload {ref.name}@{digest}: resumed at byte {2 * MIB} of {SIZE} in the same session" in caplog.messages
    assert _deletes(proxy) == []  # the session went on: nothing to cancel


def test_a_failed_closing_put_resumes_with_the_put_alone(proxy: FaultProxy, registry: Any) -> None:
    client, _, digest = _push(proxy, "resume/put", Fault("status", match=UPLOADS, methods=("PUT",), status=503))
    assert _served(registry, "resume/put", digest) == digest
    assert _sessions(proxy) == 1 and len(_patches(proxy)) == 4
    assert [r.received for r in _log(proxy) if r.method == "PUT"] == [MIB, MIB]
    assert client.stats["resumed_bytes"] == 4 * MIB


def test_a_forgotten_session_starts_a_new_one(proxy: FaultProxy, registry: Any) -> None:
    client, _, digest = _push(proxy, "resume/forgotten",
                              Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=2),
                              Fault("status", match=UPLOADS, methods=("GET",), status=404))
    assert _served(registry, "resume/forgotten", digest) == digest
    assert _sessions(proxy) == 2 and _sent_after_last_failure(proxy) == SIZE
    assert client.stats["retries"] == 1 and client.stats["resumed_bytes"] == 0
    # the registry had not forgotten it (the proxy answered the status request): the session given up is
    # cancelled
    assert _session(registry, _failed(proxy, "PATCH")[0]) == CANCELLED
    assert _deletes(proxy) == [204]


@pytest.mark.parametrize(("name", "reported"), [
    ("beyond", _range(0, 4 * MIB)),      # more than the 3 MiB this client sent in the session
    ("empty", "0-0"),                    # docker-registry's answer for an empty session (or one byte)
    ("offset", "1024-2097151"),          # not from byte 0
    ("form", "bytes 0-2097151/*"),       # not the spec's form
    ("none", ""),
])
def test_a_range_not_to_trust_starts_a_new_session(name: str, reported: str, proxy: FaultProxy,
                                                   registry: Any) -> None:
    repo = f"resume/range-{name}"
    client, _, digest = _push(proxy, repo, Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=2),
                              Fault("header", match=UPLOADS, methods=("GET",), header=("Range", reported)))
    assert _served(registry, repo, digest) == digest
    assert _sessions(proxy) == 2 and _sent_after_last_failure(proxy) == SIZE
    assert client.stats["resumed_bytes"] == 0
    assert _session(registry, _failed(proxy, "PATCH")[0]) == CANCELLED
    assert _deletes(proxy) == [204]


def test_a_range_short_of_the_truth_cannot_store_a_wrong_blob(proxy: FaultProxy, registry: Any) -> None:
    # The registry holds 2 MiB but says 1 MiB. docker-registry 2.8 takes the PATCH from 1 MiB regardless of
    # its Content-Range (it appends), so the session's bytes are wrong: the closing PUT's digest check refuses
    # them (400 DIGEST_INVALID), the session is gone, and a new one uploads the right bytes.
    client, _, digest = _push(proxy, "resume/short",
                              Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=2),
                              Fault("header", match=UPLOADS, methods=("GET",), header=("Range", _range(0))))
    assert _served(registry, "resume/short", digest) == digest
    assert _patches(proxy)[:6] == [_range(0), _range(MIB), _range(2 * MIB), _range(MIB), _range(2 * MIB),
                                   _range(3 * MIB)]
    assert [r.status for r in _log(proxy) if r.method == "PUT"] == [400, 201]
    assert _sessions(proxy) == 2 and _sent_after_last_failure(proxy) == SIZE
    assert client.stats["retries"] == 2
    # The digest-rejected session is cancelled too; docker-registry 2.8 refuses (404 BLOB_UPLOAD_INVALID: it
    # keeps the rejected bytes, which its Location no longer counts) and purges the session later.
    assert _deletes(proxy) == [404]


def test_docker_registry_cannot_resume_a_session_that_took_part_of_a_failed_request(proxy: FaultProxy,
                                                                                      registry: Any) -> None:
    # The third PATCH reaches the registry, its answer is lost. The registry now holds 3 MiB, and the
    # Location the client holds says 2 MiB: docker-registry 2.8 refuses it (404 BLOB_UPLOAD_INVALID), for
    # the status request too, so the upload starts again in a new session.
    client, _, digest = _push(proxy, "resume/lost", Fault("lose", match=UPLOADS, methods=("PATCH",), skip=2))
    assert _served(registry, "resume/lost", digest) == digest
    assert [r.status for r in _log(proxy) if r.method == "GET"] == [404]
    assert _sessions(proxy) == 2 and client.stats["resumed_bytes"] == 0
    # The cancel is sent, and refused for the same reason: the session stays until the registry purges it.
    assert _deletes(proxy) == [404]


def test_a_monolithic_upload_starts_a_new_session_without_asking(proxy: FaultProxy, registry: Any) -> None:
    client, _, digest = _push(proxy, "resume/monolithic", Fault("status", match=UPLOADS, methods=("PUT",),
                                                                status=503), chunk_size=0)
    assert _served(registry, "resume/monolithic", digest) == digest
    assert _sessions(proxy) == 2 and not any(r.method == "GET" for r in _log(proxy))
    assert [r.received for r in _log(proxy) if r.method == "PUT"] == [SIZE, SIZE]
    assert client.stats["retries"] == 1 and client.stats["resumed_bytes"] == 0
    assert _session(registry, _failed(proxy, "PUT")[0]) == CANCELLED
    assert _deletes(proxy) == [204]


def test_retries_running_out_while_resuming_fail_as_before_and_cancel_the_session(proxy: FaultProxy,
                                                                                  registry: Any) -> None:
    data, digest, read = _blob("resume/exhausted")
    proxy.add(Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=1, times=10))
    client = _client(proxy.host, retries=2)
    ref = ImageRef.parse(f"{proxy.host}/resume/exhausted:1")
    with pytest.raises(RegistryError) as failed:
        client.push_blob(ref, digest, len(data), read, chunk_size=MIB)
    what = f"upload {ref.name}@{digest}"
    assert failed.value.message == f"{what}: failed 3 times, last: {what}: http://{proxy.host} answered HTTP 503"
    assert failed.value.hint == "check the registry's health and storage; a rerun resumes"
    assert failed.value.exit_code == 4
    # each retry went on from the first MiB, in the one session
    assert _sessions(proxy) == 1 and _patches(proxy) == [_range(0)] + [_range(MIB)] * 3
    assert client.stats["retries"] == 2 and client.stats["resumed_bytes"] == 2 * MIB
    # and that session is cancelled (before: still open, 204 with Range 0-1048575, until the registry purged it)
    assert _session(registry, _failed(proxy, "PATCH")[-1]) == CANCELLED
    assert _deletes(proxy) == [204]


def test_a_monolithic_upload_that_fails_for_good_leaves_none_of_its_sessions_open(proxy: FaultProxy,
                                                                                  registry: Any) -> None:
    data, digest, read = _blob("cancel/monolithic")
    proxy.add(Fault("status", match=UPLOADS, methods=("PUT",), status=503, times=10))
    client = _client(proxy.host, retries=2)
    ref = ImageRef.parse(f"{proxy.host}/cancel/monolithic:1")
    with pytest.raises(RegistryError) as failed:
        client.push_blob(ref, digest, len(data), read)
    what = f"upload {ref.name}@{digest}"
    assert failed.value.message == f"{what}: failed 3 times, last: {what}: http://{proxy.host} answered HTTP 503"
    assert failed.value.exit_code == 4
    # three sessions, each cancelled: the two given up for a new one, and the last
    assert [_session(registry, r) for r in _failed(proxy, "PUT")] == [CANCELLED] * 3
    assert _sessions(proxy) == 3 and _deletes(proxy) == [204] * 3


# Not a registry error, after the session was opened: the bundle cannot be read for the third PATCH (raised
# before any of it is sent), or Ctrl-C arrives while the upload runs in the caller's thread. Neither is
# retried; the session is cancelled and the very same exception goes on.
@pytest.mark.parametrize("error", [DigestMismatchError("bundle.tar: blob changed on disk"), KeyboardInterrupt()],
                         ids=["unreadable", "ctrl-c"])
def test_an_upload_stopped_by_another_error_cancels_its_session(error: BaseException, proxy: FaultProxy,
                                                                registry: Any) -> None:
    data, digest, read = _blob(f"cancel/{type(error).__name__}")

    def failing(start: int, length: int) -> Iterator[bytes]:
        if start == 2 * MIB:
            raise error
        return read(start, length)

    client = _client(proxy.host)
    ref = ImageRef.parse(f"{proxy.host}/cancel/{type(error).__name__.lower()}:1")
    with pytest.raises(type(error)) as failed:
        client.push_blob(ref, digest, len(data), failing, chunk_size=MIB)
    assert failed.value is error and client.stats["retries"] == 0
    assert _patches(proxy) == [_range(0), _range(MIB)] and _deletes(proxy) == [204]
    # The DELETE went to the session's current location (the second PATCH's answer): asked there, it is gone.
    assert _session(registry, _log(proxy)[-1]) == CANCELLED


# The cancel is best effort: refused (500), its connection cut (twice: the transport tries a kept-alive
# connection once more on a fresh one), or no answer within its short timeout. The upload's own error is
# what the caller gets, word for word; the cancel's failure is one log line; the session stays open.
@pytest.mark.parametrize("kind", ["500", "cut", "silent"])
def test_a_cancel_that_fails_does_not_replace_the_upload_error(kind: str, proxy: FaultProxy, registry: Any,
                                                               caplog: pytest.LogCaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "CANCEL_TIMEOUT", 0.5)
    proxy.add(Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=1, times=10))
    proxy.add(Fault("status", match=UPLOADS, methods=("DELETE",), status=500) if kind == "500" else
              Fault("cut", match=UPLOADS, methods=("DELETE",), times=2) if kind == "cut" else
              Fault("hold", match=UPLOADS, methods=("DELETE",)))
    data, digest, read = _blob(f"cancel/fails-{kind}")
    client = _client(proxy.host, retries=1, timeout=30.0)
    ref = ImageRef.parse(f"{proxy.host}/cancel/fails-{kind}:1")
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="bundler.registry"), pytest.raises(RegistryError) as failed:
        client.push_blob(ref, digest, len(data), read, chunk_size=MIB)
    what = f"upload {ref.name}@{digest}"
    assert failed.value.message == f"{what}: failed 2 times, last: {what}: http://{proxy.host} answered HTTP 503"
    assert failed.value.hint == "check the registry's health and storage; a rerun resumes"
    assert type(failed.value) is RegistryError and failed.value.exit_code == 4
    assert failed.value.__cause__ is None and failed.value.__suppress_context__  # `from None`, as before
    assert time.monotonic() - started < 10  # "silent": the cancel's own timeout, not the client's 30 s
    cancel = [m for m in caplog.messages if "could not cancel" in m]
    assert len(cancel) == 1 and cancel[0].startswith(f"{what}: could not cancel the upload session"), caplog.messages
    assert _session(registry, _failed(proxy, "PATCH")[-1]) == (204, _range(0))  # still open: purged later


def test_a_token_without_delete_cannot_cancel_and_asks_for_no_more(token_registry: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    # docker-registry with token auth wants `delete` on the repository to cancel a session (401
    # insufficient_scope); a push asks for pull and push only, and the cancel fetches no token: the session
    # is left to the registry's purge, quietly (debug), and the upload's own error is unchanged.
    proxy = start_proxy(token_registry.url)
    try:
        proxy.add(Fault("status", match=UPLOADS, methods=("PATCH",), status=503, skip=1, times=10))
        config = RegistryConfig(proxy.host, insecure=True, username_env="U", password_env="P")
        routes = plan_routes([proxy.host], [config], environ={"U": token_registry.username,
                                                                "P": token_registry.password})
        client = RegistryClient(routes, retries=1, backoff=0.01, sleep=lambda s: None)
        data, digest, read = _blob("cancel/token")
        ref = ImageRef.parse(f"{proxy.host}/cancel/token:1")
        with caplog.at_level(logging.DEBUG, logger="bundler.registry"), pytest.raises(RegistryError) as failed:
            client.push_blob(ref, digest, len(data), read, chunk_size=MIB)
        what = f"upload {ref.name}@{digest}"
        assert failed.value.message == f"{what}: failed 2 times, last: {what}: http://{proxy.host} answered HTTP 503"
        assert _deletes(proxy) == [401]
        assert not any("delete" in r for r in token_registry.extra["issuer"].requests)
        refused = [r for r in caplog.records if "cancel the upload session" in r.getMessage()]
        assert [r.levelno for r in refused] == [logging.DEBUG] and "(HTTP 401" in refused[0].getMessage()
    finally:
        proxy.stop()
