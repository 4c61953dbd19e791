"""registry.py's chunked uploads resumed in their own session (distribution-spec v1.1: the upload status
GET answers `Range: 0-<last byte received>`), through tests/support/faultproxy.py in front of the real
docker-registry: a PATCH answered 503 or cut mid-body, the closing PUT failing, a registry that forgets
the session, answers with a Range not to trust, or lost the failed request's answer, and retries running
out. Each test reads the blob back from the registry and counts, from the proxy's log, the sessions
opened and the bytes sent."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bundler.errors import RegistryError
from bundler.reference import ImageRef
from bundler.registry import BlobReader, RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from tests.support.faultproxy import Fault, FaultProxy, Request, start_proxy

MIB = 1 << 20
SIZE = 5 * MIB  # 4 PATCHes of 1 MiB, then the closing PUT with the last 1 MiB
UPLOADS = "/blobs/uploads/"


@pytest.fixture
def proxy(registry: Any) -> Iterator[FaultProxy]:
    p = start_proxy(registry.url)
    yield p
    p.stop()


def _client(host: str, *, retries: int = 2) -> RegistryClient:
    routes = plan_routes([host], [RegistryConfig(host, insecure=True)], environ={})
    return RegistryClient(routes, retries=retries, backoff=0.01, sleep=lambda s: None)


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


def test_docker_registry_cannot_resume_a_session_that_took_part_of_a_failed_request(proxy: FaultProxy,
                                                                                      registry: Any) -> None:
    # The third PATCH reaches the registry, its answer is lost. The registry now holds 3 MiB, and the
    # Location the client holds says 2 MiB: docker-registry 2.8 refuses it (404 BLOB_UPLOAD_INVALID), for
    # the status request too, so the upload starts again in a new session.
    client, _, digest = _push(proxy, "resume/lost", Fault("lose", match=UPLOADS, methods=("PATCH",), skip=2))
    assert _served(registry, "resume/lost", digest) == digest
    assert [r.status for r in _log(proxy) if r.method == "GET"] == [404]
    assert _sessions(proxy) == 2 and client.stats["resumed_bytes"] == 0


def test_a_monolithic_upload_starts_a_new_session_without_asking(proxy: FaultProxy, registry: Any) -> None:
    client, _, digest = _push(proxy, "resume/monolithic", Fault("status", match=UPLOADS, methods=("PUT",),
                                                                status=503), chunk_size=0)
    assert _served(registry, "resume/monolithic", digest) == digest
    assert _sessions(proxy) == 2 and not any(r.method == "GET" for r in _log(proxy))
    assert [r.received for r in _log(proxy) if r.method == "PUT"] == [SIZE, SIZE]
    assert client.stats["retries"] == 1 and client.stats["resumed_bytes"] == 0


def test_retries_running_out_while_resuming_fail_as_before(proxy: FaultProxy) -> None:
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
