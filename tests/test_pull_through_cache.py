"""A cache shared by many CI runners: the Debian docker-registry as a pull-through cache (proxy mode).

Runners list the cache as a mirror of the upstream registry (`registries: [{host: UPSTREAM, mirrors:
[CACHE], skipUpstream: true}]`). Two builds on two runners (two local caches) go through one proxy:
the second build's upstream traffic is only manifest checks. The proxy is never trusted for content:
every byte is still checked against its digest, and a proxy serving a damaged blob is refused.

Topology (all 127.0.0.1): tool -> CACHE (docker-registry, proxy.remoteurl) -> UP (a counting proxy) ->
upstream docker-registry. The tool's references name DIRECT, a second counting proxy in front of the
same upstream, so any request the tool sends past the mirror would show there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bundler.errors import DigestMismatchError
from bundler.layout import Layout
from bundler.pull import Sources, pull
from bundler.spec import RegistryConfig
from tests.support.faultproxy import Fault, start_proxy
from tests.support.images import Pusher, multi_platform
from tests.support.registry import running_registry


@pytest.fixture
def topology(tmp_path: Path) -> Any:
    with running_registry(tmp_path / "upstream") as upstream:
        index = multi_platform("shared", seed=3, layers=2, layer_size=64 * 1024)
        Pusher.to(upstream).push("team/app", index, tag="1.0")
        up, direct = start_proxy(upstream.url), start_proxy(upstream.url)
        try:
            with running_registry(tmp_path / "cache", proxy_url=f"http://{up.host}") as cache:
                yield {"index": index, "up": up, "direct": direct, "cache": cache, "tmp": tmp_path}
        finally:
            up.stop()
            direct.stop()


def _build(t: dict[str, Any], runner: str, *, skip_upstream: bool = True) -> Any:
    ref = f"{t['direct'].host}/team/app:1.0"
    sources = Sources(registries=(RegistryConfig(t["direct"].host, mirrors=(t["cache"].host,),
                                                 skip_upstream=skip_upstream, insecure=True),),
                      insecure_hosts=(t["cache"].host, t["direct"].host), retries=1, backoff=0.01)
    [image] = pull([ref], layout=t["tmp"] / runner / "out", sources=sources, cache=t["tmp"] / runner / "cache")
    return image


def test_second_runner_costs_upstream_only_manifest_checks(topology: dict[str, Any]) -> None:
    first = _build(topology, "runner-1")
    cold = [r for r in topology["up"].log]
    assert any("/blobs/" in r.path for r in cold), "the first build filled the proxy from upstream"
    topology["up"].log.clear()
    second = _build(topology, "runner-2")
    assert second.bundled_digest == first.bundled_digest
    warm = topology["up"].log
    # The proxy revalidates the tag (HEAD manifest) after its API ping; it sends no blob request.
    assert any("/manifests/" in r.path for r in warm)
    assert all("/manifests/" in r.path or r.path == "/v2/" for r in warm), [(r.method, r.path) for r in warm]
    assert topology["direct"].log == [], "the tool never went past the mirror"
    # What the second runner holds was checked against its digests, as it streamed from the proxy.
    out = Layout(topology["tmp"] / "runner-2" / "out")
    for blob in topology["index"].blobs():
        if out.has_blob(blob.digest):
            assert out.read_blob(blob.digest) == blob.data


def test_damaged_bytes_from_upstream_through_the_proxy_are_refused_then_refetched(topology: dict[str, Any]) -> None:
    layer = topology["index"].images[0].layers[-1]
    fault = topology["up"].add(Fault("corrupt", match=f"/blobs/{layer.digest}"))
    image = _build(topology, "runner-1")
    assert fault.fired == 1
    fetched = [r for r in topology["up"].log if r.path.endswith(f"/blobs/{layer.digest}") and r.method == "GET"]
    assert len(fetched) >= 2, "the damaged copy was discarded and fetched once more"
    assert Layout(topology["tmp"] / "runner-1" / "out").read_blob(layer.digest) == layer.data
    assert len(image.platforms) == 2


def test_a_proxy_serving_damaged_content_is_never_trusted(topology: dict[str, Any]) -> None:
    _build(topology, "runner-1")  # fills the proxy's storage
    layer = topology["index"].images[1].layers[-1]
    stored = topology["cache"].storage / "docker/registry/v2/blobs/sha256" / layer.digest[7:9] / layer.digest[7:] / "data"
    assert stored.read_bytes() == layer.data
    stored.write_bytes(layer.data[:-1] + bytes([layer.data[-1] ^ 1]))  # the proxy's disk goes bad
    with pytest.raises(DigestMismatchError) as info:
        _build(topology, "runner-2")  # skipUpstream: the mirror is the only source
    assert info.value.exit_code == 7 and layer.digest in str(info.value)
    assert not (topology["tmp"] / "runner-2" / "out" / "blobs/sha256" / layer.digest[7:]).exists()
