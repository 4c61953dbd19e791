"""registry.py against real docker-registry instances: auth variants, TLS CA, retries, mirrors, Range resume."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import AuthError, DigestMismatchError, NotFoundError, RegistryError, UsageError
from bundler.oci import DOCKER_LIST, OCI_INDEX, sha256_digest
from bundler.reference import ImageRef
from bundler.registry import RegistryClient, _literal_or_loopback, load_credentials, plan_routes
from bundler.spec import MirrorConfig, RegistryConfig
from tests.support.faultproxy import Fault, FaultProxy, start_proxy
from tests.support.images import Pusher, multi_platform, single_platform
from tests.support.registry import free_port, running_registry

INDEX = multi_platform("reg-test", seed=11)
BIG = single_platform("reg-big", layer_size=3 << 20)


@pytest.fixture(scope="module")
def pushed(registry: Any) -> dict[str, str]:
    pusher = Pusher.to(registry)
    pusher.push("rt/app", INDEX, "v1")
    pusher.push("rt/big", BIG, "v1")
    pusher.push("rt/dl", multi_platform("reg-dl", seed=12, docker=True), "v1")
    return {"app": f"{registry.host}/rt/app:v1", "big": f"{registry.host}/rt/big:v1", "dl": f"{registry.host}/rt/dl:v1"}


def client_for(host: str, *, insecure: bool = True, environ: dict[str, str] | None = None,
               **config: Any) -> RegistryClient:
    routes = plan_routes([host], [RegistryConfig(host, insecure=insecure, **config)], environ=environ or {})
    return RegistryClient(routes, backoff=0.01, sleep=lambda s: None)


def docker_config(tmp_path: Path, host: str, user: str, password: str) -> dict[str, str]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {f"https://{host}": {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(tmp_path), "HOME": str(tmp_path)}


def test_manifest_bytes_exact_and_typed(registry: Any, pushed: dict[str, str]) -> None:
    client = client_for(registry.host)
    m = client.get_manifest(ImageRef.parse(pushed["app"]))
    assert m.data == INDEX.manifest.data and m.digest == INDEX.digest and m.media_type == OCI_INDEX
    dl = client.get_manifest(ImageRef.parse(pushed["dl"]))
    assert dl.media_type == DOCKER_LIST  # never converted
    by_digest = client.get_manifest(ImageRef.parse(pushed["app"]), INDEX.images[0].digest)
    assert by_digest.data == INDEX.images[0].manifest.data


def test_missing_manifest_is_not_found(registry: Any, pushed: dict[str, str]) -> None:
    with pytest.raises(NotFoundError) as info:
        client_for(registry.host).get_manifest(ImageRef.parse(f"{registry.host}/rt/app:nope"))
    assert info.value.exit_code == 6 and "rt/app:nope" in str(info.value)


def test_blob_stream(registry: Any, pushed: dict[str, str]) -> None:
    layer = BIG.layers[0]
    data = b"".join(client_for(registry.host).blob_chunks(ImageRef.parse(pushed["big"]), layer.digest))
    assert data == layer.data
    tail = b"".join(client_for(registry.host).blob_chunks(ImageRef.parse(pushed["big"]), layer.digest, 1000))
    assert tail == layer.data[1000:]


def test_fail_closed_and_https_by_default(registry: Any) -> None:
    with pytest.raises(UsageError) as info:
        plan_routes(["docker.io"], [RegistryConfig(registry.host)])
    assert "not allowed" in str(info.value)
    routes = plan_routes([registry.host], [RegistryConfig(registry.host)], environ={})
    assert routes[registry.host][0].scheme == "https"  # plain HTTP only when listed
    insecure = plan_routes([registry.host], [RegistryConfig(registry.host)], insecure_hosts=[registry.host])
    assert insecure[registry.host][0].scheme == "http"
    with pytest.raises(RegistryError):  # an HTTP server spoken to with TLS: a clear failure, not a downgrade
        client_for(registry.host, insecure=False).get_manifest(ImageRef.parse(f"{registry.host}/rt/app:v1"))


def test_basic_auth_from_docker_config(auth_registry: Any, tmp_path: Path) -> None:
    Pusher.to(auth_registry).push("secure/app", INDEX, "v1")
    ref = ImageRef.parse(f"{auth_registry.host}/secure/app:v1")
    env = docker_config(tmp_path, auth_registry.host, auth_registry.username, auth_registry.password)
    assert client_for(auth_registry.host, environ=env).get_manifest(ref).digest == INDEX.digest
    with pytest.raises(AuthError) as info:
        client_for(auth_registry.host, environ={"HOME": str(tmp_path / "none")}).get_manifest(ref)
    assert info.value.exit_code == 5 and "no credentials" in str(info.value)
    bad = docker_config(tmp_path, auth_registry.host, auth_registry.username, "wrong-Secret-123")
    with pytest.raises(AuthError) as info:
        client_for(auth_registry.host, environ=bad).get_manifest(ref)
    assert "wrong-Secret-123" not in str(info.value) and "credentials from" in str(info.value)


def test_credentials_from_auth_file_and_env(auth_registry: Any, tmp_path: Path) -> None:
    auth = base64.b64encode(f"{auth_registry.username}:{auth_registry.password}".encode()).decode()
    (tmp_path / "auth.json").write_text(json.dumps({"auths": {auth_registry.host: {"auth": auth}}}))
    creds = load_credentials(auth_registry.host, environ={"REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
                                                          "HOME": str(tmp_path)})
    assert creds is not None and creds.username == auth_registry.username
    assert auth_registry.password not in repr(creds)
    env = {"U": auth_registry.username, "P": auth_registry.password, "HOME": str(tmp_path)}
    Pusher.to(auth_registry).push("secure/env", INDEX, "v1")
    client = client_for(auth_registry.host, environ=env, username_env="U", password_env="P")
    assert client.get_manifest(ImageRef.parse(f"{auth_registry.host}/secure/env:v1")).digest == INDEX.digest
    with pytest.raises(AuthError, match="not set"):
        load_credentials("x", username_env="NOPE_U", password_env="NOPE_P", environ={})


def test_bearer_token_dance(token_registry: Any, tmp_path: Path) -> None:
    Pusher.to(token_registry).push("tok/app", INDEX, "v1")
    ref = ImageRef.parse(f"{token_registry.host}/tok/app:v1")
    env = docker_config(tmp_path, token_registry.host, token_registry.username, token_registry.password)
    client = client_for(token_registry.host, environ=env)
    assert client.get_manifest(ref).digest == INDEX.digest
    layer = INDEX.images[0].layers[0]
    assert b"".join(client.blob_chunks(ref, layer.digest)) == layer.data
    issued = [p for p in token_registry.extra["issuer"].requests if "tok%2Fapp" in p or "tok/app" in p]
    assert issued and all("pull" in p for p in issued)
    with pytest.raises(AuthError) as info:
        client_for(token_registry.host, environ={"HOME": str(tmp_path / "none")}).get_manifest(ref)
    assert "token service" in str(info.value)


def test_tls_custom_ca_wins_over_requests_ca_bundle(tls_registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    Pusher.to(tls_registry).push("tls/app", INDEX, "v1")
    ref = ImageRef.parse(f"{tls_registry.host}/tls/app:v1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # a bundle without the test CA
    monkeypatch.setenv("CURL_CA_BUNDLE", certifi.where())
    routes = plan_routes([tls_registry.host], [RegistryConfig(tls_registry.host, ca_file=tls_registry.ca_file)])
    assert RegistryClient(routes).get_manifest(ref).digest == INDEX.digest
    cli_ca = plan_routes([tls_registry.host], [RegistryConfig(tls_registry.host)], ca_file=tls_registry.ca_file)
    assert RegistryClient(cli_ca).get_manifest(ref).digest == INDEX.digest
    without = plan_routes([tls_registry.host], [RegistryConfig(tls_registry.host)])
    with pytest.raises(RegistryError) as info:
        RegistryClient(without, retries=0).get_manifest(ref)
    assert "TLS verification failed" in str(info.value) and "caFile" in str(info.value)


def test_mirrors_first_then_upstream(registry: Any, pushed: dict[str, str], tmp_path: Path) -> None:
    ref = ImageRef.parse(pushed["app"])
    with running_registry(tmp_path / "mirror") as mirror:
        mirror_only = multi_platform("mirror-only", seed=13)
        Pusher.to(mirror).push("rt/app", mirror_only, "v1")  # the mirror has a different rt/app:v1
        Pusher.to(mirror).push("rt/onlymirror", mirror_only, "v1")
        config = RegistryConfig(registry.host, mirrors=(mirror.host,), insecure=True)
        mirrored = RegistryConfig(mirror.host, insecure=True)
        client = RegistryClient(plan_routes([registry.host], [config, mirrored], environ={}))
        assert [e.host for e in client.routes[registry.host]] == [mirror.host, registry.host]
        got = client.get_manifest(ref)
        assert got.digest == mirror_only.digest and got.endpoint == mirror.url  # mirror tried first
        fallback = client.get_manifest(ImageRef.parse(pushed["big"]))  # not on the mirror: upstream
        assert fallback.endpoint == registry.url
        skip = RegistryConfig(registry.host, mirrors=(mirror.host,), skip_upstream=True, insecure=True)
        only = RegistryClient(plan_routes([registry.host], [skip, mirrored], environ={}))
        with pytest.raises(NotFoundError):
            only.get_manifest(ImageRef.parse(pushed["big"]))


def test_one_wildcard_entry_routes_every_host_through_a_prefixed_mirror(registry: Any, tmp_path: Path) -> None:
    """`host: "*"` with `mirror: {host, prefix: "{host}", insecure}`: docker.io/library/app is fetched as
    MIRROR/docker.io/library/app, quay.io/team/app as MIRROR/quay.io/team/app; no upstream is contacted."""
    hub, quay = multi_platform("wild-hub", seed=31), multi_platform("wild-quay", seed=32)
    Pusher.to(registry).push("docker.io/library/wildapp", hub, "v1")
    Pusher.to(registry).push("quay.io/team/wildapp", quay, "v1")
    wildcard = RegistryConfig("*", mirror=MirrorConfig(registry.host, prefix="{host}", insecure=True))
    routes = plan_routes(["docker.io", "quay.io"], [wildcard], environ={})
    assert {h: [(e.url, e.prefix) for e in eps] for h, eps in routes.items()} == {
        "docker.io": [(registry.url, "docker.io")], "quay.io": [(registry.url, "quay.io")]}
    client = RegistryClient(routes)
    assert client.describe() == [f"{registry.url}/docker.io (mirror of docker.io, plain HTTP)",
                                 f"{registry.url}/quay.io (mirror of quay.io, plain HTTP)"]
    assert client.get_manifest(ImageRef.parse("wildapp:v1")).digest == hub.digest
    assert client.get_manifest(ImageRef.parse("quay.io/team/wildapp:v1")).digest == quay.digest
    # an entry of the host's own wins over the wildcard: here it allows only its upstream, which lacks the image
    own = RegistryConfig(registry.host, insecure=True)
    mixed = RegistryClient(plan_routes(["docker.io", registry.host], [wildcard, own], environ={}))
    assert [e.prefix for e in mixed.routes[registry.host]] == [""]
    # credentials named in the mirror object are the mirror's, read from the environment it names
    named = RegistryConfig("*", mirror=MirrorConfig(registry.host, prefix="{host}", insecure=True,
                                                    username_env="MIRROR_USER", password_env="MIRROR_PASSWORD"))
    [endpoint] = plan_routes(["quay.io"], [named], environ={"MIRROR_USER": "u", "MIRROR_PASSWORD": "p"})["quay.io"]
    assert endpoint.credentials is not None and endpoint.credentials.source == "env MIRROR_USER"
    # a prefix that does not make a repository path (a port in the source host) is refused before any request
    with pytest.raises(UsageError, match=r"becomes '127.0.0.1:\d+', which is not a repository path"):
        plan_routes(["127.0.0.1:5999"], [wildcard], environ={})


def test_a_mirror_carries_its_own_tls_ca_in_the_same_entry(tls_registry: Any, registry: Any) -> None:
    """`mirror: {host, prefix, caFile}` on the upstream's entry: the mirror is tried first over TLS with
    its own CA; the upstream (plain HTTP here) stays the fallback."""
    image = multi_platform("tls-mirror", seed=33)
    Pusher.to(tls_registry).push(f"cache/{registry.host.split(':')[0]}/tlsmirror/app", image, "v1")
    config = RegistryConfig(registry.host, insecure=True, mirror=MirrorConfig(
        tls_registry.host, prefix=f"cache/{registry.host.split(':')[0]}", ca_file=tls_registry.ca_file))
    routes = plan_routes([registry.host], [config], environ={})
    assert [(e.scheme, e.custom_ca) for e in routes[registry.host]] == [("https", True), ("http", False)]
    got = RegistryClient(routes).get_manifest(ImageRef.parse(f"{registry.host}/tlsmirror/app:v1"))
    assert got.digest == image.digest and got.endpoint == tls_registry.url
    without_ca = RegistryConfig(registry.host, insecure=True, skip_upstream=True,
                                mirror=MirrorConfig(tls_registry.host, prefix="cache"))
    with pytest.raises(RegistryError, match="TLS verification failed"):
        RegistryClient(plan_routes([registry.host], [without_ca], environ={}), retries=0).get_manifest(
            ImageRef.parse(f"{registry.host}/tlsmirror/app:v1"))


@pytest.fixture
def proxy(registry: Any):  # type: ignore[no-untyped-def]
    p = start_proxy(registry.url)
    yield p
    p.stop()


def proxied(proxy: FaultProxy, ref: str) -> ImageRef:
    parsed = ImageRef.parse(ref)
    return ImageRef(proxy.host, parsed.path, parsed.tag)


def test_retries_500_and_429_with_retry_after(proxy: FaultProxy, pushed: dict[str, str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bundler.registry")
    slept: list[float] = []
    routes = plan_routes([proxy.host], [RegistryConfig(proxy.host, insecure=True)], environ={})
    client = RegistryClient(routes, backoff=0.01, sleep=slept.append)
    proxy.add(Fault("status", match="/manifests/", status=500))
    proxy.add(Fault("status", match="/manifests/", status=429, retry_after="7"))
    assert client.get_manifest(proxied(proxy, pushed["app"])).digest == INDEX.digest
    assert 7.0 in slept and len(slept) == 2
    assert [r.status for r in proxy.requests_to("/manifests/")] == [500, 429, 200]
    proxy.add(Fault("status", match="/manifests/", status=503, times=99))
    with pytest.raises(RegistryError) as info:
        client.get_manifest(proxied(proxy, pushed["app"]))
    assert "HTTP 503" in str(info.value) and info.value.exit_code == 4
    # 2 + 5 retries over two requests: one log line for the endpoint, not one per attempt
    retry_lines = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert client.stats["retries"] == 7 and len(retry_lines) == 1, retry_lines
    assert retry_lines[0].startswith(f"http://{proxy.host}: manifest {proxy.host}/rt/app:v1: HTTP 500; retrying")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_refused_connection_on_loopback_is_reported_at_once(host: str) -> None:
    """Nothing listens on the port: the first refusal is the answer (no 5 retries with backoff), naming the URL."""
    slept: list[float] = []
    address = f"{host}:{free_port()}"
    client = RegistryClient(plan_routes([address], [RegistryConfig(address, insecure=True)], environ={}),
                            sleep=slept.append)
    with pytest.raises(RegistryError) as info:
        client.get_manifest(ImageRef.parse(f"{address}/rt/app@sha256:{'a' * 64}"))
    assert str(info.value) == (f"manifest {address}/rt/app@sha256:{'a' * 64}: connection refused by "
                               f"http://{address}/v2/rt/app/manifests/sha256:{'a' * 64} (start the registry, or "
                               "fix its host and port (the spec's registries:, or push --registry))")
    assert info.value.exit_code == 4 and slept == [] and client.stats["requests"] == 1


def test_a_connection_closed_without_an_answer_is_retried_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Something listens but hangs up before answering (a registry restarting): that is worth retrying,
    unlike a refusal; the retries are logged once for the endpoint."""
    import socket
    import threading

    caplog.set_level(logging.INFO, logger="bundler.registry")
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"

    def hang_up() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    slept: list[float] = []
    try:
        client = RegistryClient(plan_routes([address], [RegistryConfig(address, insecure=True)], environ={}),
                                retries=2, sleep=slept.append)
        with pytest.raises(RegistryError) as info:
            client.get_manifest(ImageRef.parse(f"{address}/rt/app:v1"))
    finally:
        server.close()
    assert f"http://{address} unreachable after 3 attempts (RemoteDisconnected: " in str(info.value)
    assert len(slept) == 2 and len([r for r in caplog.records if "retrying" in r.getMessage()]) == 1


def test_only_literal_addresses_and_loopback_names_refuse_for_good() -> None:
    assert _literal_or_loopback("10.1.2.3") and _literal_or_loopback("::1") and _literal_or_loopback("a.localhost")
    assert not _literal_or_loopback("registry.example.com")  # a name may resolve elsewhere next time


def test_not_found_names_the_digest_reference_and_the_full_url(registry: Any, pushed: dict[str, str],
                                                               tmp_path: Path) -> None:
    """`name@sha256:...`, never `name:sha256:...`; the URL requested, with the mirror's path prefix."""
    missing = "sha256:" + "b" * 64
    ref = ImageRef.parse(f"{registry.host}/rt/app@{missing}")
    with running_registry(tmp_path / "mirror") as mirror:
        client = RegistryClient(plan_routes([registry.host], [
            RegistryConfig(registry.host, mirrors=(f"{mirror.host}/hub",), skip_upstream=True),
            RegistryConfig(mirror.host, insecure=True)], environ={}))
        with pytest.raises(NotFoundError) as info:
            client.get_manifest(ref)
    assert str(info.value).startswith(f"manifest {registry.host}/rt/app@{missing}: not found at "
                                      f"{mirror.url}/v2/hub/rt/app/manifests/{missing} (")
    assert ":sha256:" not in str(info.value)


def test_dropped_blob_resumes_with_range(proxy: FaultProxy, pushed: dict[str, str]) -> None:
    layer = BIG.layers[0]
    proxy.add(Fault("drop", match=layer.digest, after=1_000_000))
    client = client_for(proxy.host)
    data = b"".join(client.blob_chunks(proxied(proxy, pushed["big"]), layer.digest))
    assert sha256_digest(data) == layer.digest
    gets = proxy.requests_to(layer.digest)
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range is not None and int(gets[1].range.split("=")[1].rstrip("-")) >= 1_000_000 - (1 << 20)
    assert client.stats["resumes"] == 1


def test_corrupted_manifest_by_digest_rejected(proxy: FaultProxy, pushed: dict[str, str]) -> None:
    proxy.add(Fault("corrupt", match=f"/manifests/{INDEX.images[0].digest}"))
    with pytest.raises(DigestMismatchError) as info:
        client_for(proxy.host).get_manifest(proxied(proxy, pushed["app"]), INDEX.images[0].digest)
    assert info.value.exit_code == 7


def test_keep_alive_off_sends_connection_close(proxy: FaultProxy, pushed: dict[str, str]) -> None:
    client = client_for(proxy.host, keep_alive=False)
    client.get_manifest(proxied(proxy, pushed["app"]))
    assert proxy.log and all(r.connection == "close" for r in proxy.log)


def test_credentials_are_dropped_on_a_redirect_to_another_host(auth_registry: Any, registry: Any,
                                                              tmp_path: Path) -> None:
    # Registries send blobs to storage elsewhere (S3, a CDN) with a redirect: the registry's
    # credentials must not follow to that other host, and must follow a redirect on the same host.
    Pusher.to(auth_registry).push("secure/redir", INDEX, "v1")
    Pusher.to(registry).push("secure/redir", INDEX, "v1")  # the "storage" host holds the same blob
    front, storage = start_proxy(auth_registry.url), start_proxy(registry.url)
    try:
        env = docker_config(tmp_path, front.host, auth_registry.username, auth_registry.password)
        client = client_for(front.host, environ=env)
        ref = ImageRef(front.host, "secure/redir", "v1")
        client.get_manifest(ref)  # learns the basic-auth challenge: blob requests carry credentials
        layer = INDEX.images[0].layers[0]
        front.add(Fault("redirect", match=layer.digest, location=f"http://{storage.host}"))
        assert b"".join(client.blob_chunks(ref, layer.digest)) == layer.data
        [sent] = front.requests_to(layer.digest)
        [followed] = storage.requests_to(layer.digest)
        assert sent.status == 307 and (sent.authorization or "").startswith("Basic ")
        assert followed.status == 200 and followed.authorization is None
        other = INDEX.images[1].layers[0]
        front.add(Fault("redirect", match=other.digest, location=f"http://{front.host}"))  # same host
        assert b"".join(client.blob_chunks(ref, other.digest)) == other.data
        assert [(r.status, r.authorization == sent.authorization) for r in front.requests_to(other.digest)] == \
            [(307, True), (200, True)]
    finally:
        front.stop()
        storage.stop()


def test_errors_never_carry_credentials_or_tokens(auth_registry: Any, tmp_path: Path) -> None:
    # A connection failure's text is built by urllib3 from what it was given; whatever it holds, the
    # registry password, a bearer token of that endpoint and any Authorization header are masked.
    env = docker_config(tmp_path, auth_registry.host, auth_registry.username, auth_registry.password)
    client = client_for(auth_registry.host, environ=env)
    [ep] = client.routes[auth_registry.host]
    client._tokens[(ep.url, "repository:x:pull")] = "tok.en-value"
    text = (f"GET {ep.url}/v2/ with password {auth_registry.password} and token tok.en-value failed; "
            "headers {'Authorization': 'Basic dGVzdGVyOnMzY3JldA==', 'User-Agent': 'airgap-bundle'}")
    redacted = client._redact(text, ep)
    assert auth_registry.password not in redacted and "tok.en-value" not in redacted
    assert "dGVzdGVyOnMzY3JldA==" not in redacted and "'Authorization': 'Basic ***'" in redacted
    assert redacted.startswith(f"GET {ep.url}/v2/ with password *** and token *** failed")
