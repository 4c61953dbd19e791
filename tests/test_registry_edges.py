"""registry.py's edges not on the redirect or redaction paths: credentials files in their odd shapes,
the endpoint log line, routes that cannot work, and a real registry behind the fault proxy answering
429 for good, 416, Retry-After as an HTTP date, and dropping a blob more often than retries allow."""

from __future__ import annotations

import email.utils
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import AuthError, RateLimitedError, RegistryError, UsageError
from bundler.reference import ImageRef
from bundler.registry import Manifest, RegistryClient, load_credentials, media_type_of, plan_routes
from bundler.spec import RegistryConfig
from tests.support.faultproxy import Fault, FaultProxy, start_proxy
from tests.support.images import Pusher, single_platform

IMAGE = single_platform("reg-edges", layer_size=400_000)
LAYER = IMAGE.layers[0]


def _auth_file(tmp_path: Path, auths: Any) -> dict[str, str]:
    (tmp_path / "auth.json").write_text(auths if isinstance(auths, str) else json.dumps({"auths": auths}))
    return {"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"), "HOME": str(tmp_path / "home")}


def test_credentials_files_in_their_odd_shapes(tmp_path: Path) -> None:
    env = _auth_file(tmp_path, {"other.example:5000": {"auth": "eDp5"}, "reg.example": {"username": "u",
                                                                                       "password": "p"}})
    creds = load_credentials("reg.example", environ=env)
    assert creds is not None and (creds.username, creds.password, creds.source) == ("u", "p", str(tmp_path / "auth.json"))
    assert load_credentials("reg.example", docker_config=False, environ=env) is None
    assert load_credentials("third.example", environ=env) is None
    env = _auth_file(tmp_path, {"reg.example": {"auth": "%%% not base64 %%%"}})
    with pytest.raises(AuthError, match="auth.json: the auth entry for reg.example is not base64 user:password"):
        load_credentials("reg.example", environ=env)
    env = _auth_file(tmp_path, "{not json")
    with pytest.raises(AuthError, match="cannot read credentials file .*auth.json"):
        load_credentials("reg.example", environ=env)


def test_the_endpoint_line_names_ca_and_credentials_source(tmp_path: Path) -> None:
    env = {"U": "user", "P": "secret", "HOME": str(tmp_path)}
    routes = plan_routes(["reg.example"], [RegistryConfig("reg.example", ca_file=tmp_path / "ca.pem",
                                                          username_env="U", password_env="P")], environ=env)
    [line] = RegistryClient(routes).describe()
    assert line == f"https://reg.example (CA {tmp_path / 'ca.pem'}, credentials from env U)"
    assert "secret" not in line


def test_routes_that_cannot_work_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="registry reg.example: skipUpstream is set and no mirrors are listed"):
        plan_routes(["reg.example"], [RegistryConfig("reg.example", skip_upstream=True)], environ={})
    client = RegistryClient(plan_routes(["reg.example"], [RegistryConfig("reg.example")], environ={}))
    with pytest.raises(UsageError, match="registry quay.io is not allowed"):
        client.get_manifest(ImageRef.parse("quay.io/org/app:1"))


@pytest.fixture(scope="module")
def pushed(registry: Any) -> str:
    Pusher.to(registry).push("edges/app", IMAGE, "v1")
    return "edges/app:v1"


@pytest.fixture
def proxy(registry: Any):  # type: ignore[no-untyped-def]
    p = start_proxy(registry.url)
    yield p
    p.stop()


def _client(proxy: FaultProxy, sleeps: list[float], retries: int = 2) -> RegistryClient:
    routes = plan_routes([proxy.host], [RegistryConfig(proxy.host, insecure=True)], environ={})
    return RegistryClient(routes, retries=retries, backoff=0.01, sleep=sleeps.append)


def test_429_for_good_is_rate_limited(proxy: FaultProxy, pushed: str) -> None:
    proxy.add(Fault("status", match="/manifests/", status=429, times=10, retry_after="0"))
    sleeps: list[float] = []
    with pytest.raises(RateLimitedError, match="kept answering 429 Too Many Requests") as info:
        _client(proxy, sleeps).get_manifest(ImageRef.parse(f"{proxy.host}/{pushed}"))
    assert info.value.exit_code == 4 and sleeps == [0.0, 0.0]


def test_416_on_a_blob_is_a_registry_error(proxy: FaultProxy, pushed: str) -> None:
    proxy.add(Fault("status", match="/blobs/", status=416))
    with pytest.raises(RegistryError, match=r"refused the byte range \(HTTP 416\)"):
        b"".join(_client(proxy, []).blob_chunks(ImageRef.parse(f"{proxy.host}/{pushed}"), LAYER.digest))


def test_retry_after_as_an_http_date_or_nonsense(proxy: FaultProxy, pushed: str) -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    for value in (future, past, "soon"):
        proxy.add(Fault("status", match="/manifests/", status=503, retry_after=value))
    sleeps: list[float] = []
    client = _client(proxy, sleeps, retries=3)
    assert client.get_manifest(ImageRef.parse(f"{proxy.host}/{pushed}")).digest == IMAGE.digest
    assert 5 < sleeps[0] <= 30 and sleeps[1] == 0.0  # the date (30 s ahead when written), then a date gone by
    assert 0 < sleeps[2] < 1  # not a delay at all: the client's own backoff


def test_a_blob_dropped_more_often_than_retries_allow(proxy: FaultProxy, pushed: str) -> None:
    proxy.add(Fault("drop", match=LAYER.digest, after=1000, times=10))
    with pytest.raises(RegistryError, match=r"connection to .* failed 3 times mid-transfer"):
        b"".join(_client(proxy, []).blob_chunks(ImageRef.parse(f"{proxy.host}/{pushed}"), LAYER.digest))


@pytest.mark.parametrize(("data", "content_type", "expected"), [
    (b'{"schemaVersion": 2, "manifests": []}', "application/vnd.docker.distribution.manifest.list.v2+json; x=1",
     "application/vnd.docker.distribution.manifest.list.v2+json"),
    (b'{"schemaVersion": 2, "manifests": []}', "application/json", "application/vnd.oci.image.index.v1+json"),
    (b'{"schemaVersion": 2, "config": {}, "layers": []}', "", "application/vnd.oci.image.manifest.v1+json"),
])
def test_media_type_from_the_header_or_the_shape(data: bytes, content_type: str, expected: str) -> None:
    assert media_type_of(data, content_type, "x:1") == expected


@pytest.mark.parametrize(("data", "message"), [
    (b"<html>", "manifest x:1 is not JSON"),
    (b"[]", "manifest x:1 is not a JSON object"),
    (b'{"schemaVersion": 1, "fsLayers": []}', "manifest x:1 is Docker schema 1, which is deprecated"),
    (b'{"schemaVersion": 2, "blobs": []}', "manifest x:1 has unsupported media type 'text/plain'"),
])
def test_manifests_that_are_not_ones(data: bytes, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        media_type_of(data, "text/plain", "x:1")


def test_manifest_json_must_be_an_object() -> None:
    with pytest.raises(RegistryError, match="manifest sha256:x from http://r is not a JSON object"):
        Manifest(b"[1]", "application/vnd.oci.image.manifest.v1+json", "sha256:x", "http://r").json()
