"""pull.py's refusals and bookkeeping against a real docker-registry: an index that nests an index, an
index entry whose size is not the manifest's, offline runs that miss the cache or have none, a cache
that is the output itself, and one image written two ways."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import DigestMismatchError, OfflineMissError, RegistryError, UsageError
from bundler.layout import Layout
from bundler.oci import Descriptor, Platform
from bundler.pull import Sources, pull
from tests.support.images import OCI_INDEX, Blob, Pusher, dumps, make_index, multi_platform, single_platform

PLAIN = single_platform("pull-edges", layer_size=4096)
INNER = multi_platform("pull-edges-inner", platforms=("linux/amd64",))
AMD64 = [Platform("linux", "amd64")]


@pytest.fixture(scope="module")
def pushed(registry: Any) -> dict[str, str]:
    pusher = Pusher.to(registry)
    pusher.push("edges/plain", PLAIN, "latest")
    pusher.push("edges/nested", INNER)
    nested = {"schemaVersion": 2, "mediaType": OCI_INDEX,
              "manifests": [{**INNER.manifest.descriptor(), "platform": {"os": "linux", "architecture": "amd64"}}]}
    pusher.push_manifest("edges/nested", Blob(OCI_INDEX, dumps(nested)), "v1")
    lying = make_index([PLAIN])
    entry = json.loads(lying.manifest.data)
    entry["manifests"][0]["size"] += 1
    pusher.push_image("edges/lying", PLAIN)
    pusher.push_manifest("edges/lying", Blob(OCI_INDEX, dumps(entry)), "v1")
    host = registry.host
    return {"plain": f"{host}/edges/plain", "nested": f"{host}/edges/nested:v1", "lying": f"{host}/edges/lying:v1",
            "host": host}


def _pull(refs: list[str], tmp: Path, pushed: dict[str, str], **kw: Any) -> Any:
    sources = Sources.for_refs(refs, insecure_hosts=(pushed["host"],), backoff=0.01)
    return pull(refs, layout=tmp / "out", sources=sources, platforms=AMD64, **kw)


def test_an_index_inside_an_index_is_refused(pushed: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=re.escape(f"entry {INNER.digest} of the index is a {OCI_INDEX}; nested "
                                                      "indexes are not supported")):
        _pull([pushed["nested"]], tmp_path, pushed)


def test_an_index_entry_with_the_wrong_size_is_refused(pushed: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(DigestMismatchError, match=f"manifest {PLAIN.digest} is {PLAIN.manifest.size} bytes, the "
                                                  f"index says {PLAIN.manifest.size + 1}"):
        _pull([pushed["lying"]], tmp_path, pushed)
    assert not Layout(tmp_path / "out").entries()


def test_one_image_written_two_ways_is_reported_as_each(pushed: dict[str, str], tmp_path: Path) -> None:
    a, b = _pull([pushed["plain"], pushed["plain"] + ":latest"], tmp_path, pushed, cache=tmp_path / "out")
    assert (a.source, b.source) == (pushed["plain"], pushed["plain"] + ":latest")
    assert a.bundled_digest == b.bundled_digest == PLAIN.digest


def test_offline_needs_a_cache_and_names_what_it_lacks(pushed: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--offline needs a cache to read from"):
        pull([pushed["plain"]], layout=tmp_path / "out", offline=True, platforms=AMD64)
    _pull([pushed["plain"]], tmp_path / "first", pushed, cache=tmp_path / "cache")
    by_digest = f"{pushed['plain']}@{INNER.digest}"
    with pytest.raises(OfflineMissError, match=f"edges/plain@{INNER.digest}: not in the cache") as info:
        pull([by_digest], layout=tmp_path / "out", cache=tmp_path / "cache", offline=True, platforms=AMD64)
    assert info.value.exit_code == 9
    layer = PLAIN.layers[0].digest
    (tmp_path / "cache" / "blobs" / "sha256" / layer.split(":")[1]).unlink()
    with pytest.raises(OfflineMissError, match=f"blob {layer} is not in the cache"):
        pull([pushed["plain"]], layout=tmp_path / "out2", cache=tmp_path / "cache", offline=True,
             platforms=AMD64)


def test_a_malformed_manifest_in_the_cache_is_a_registry_error(tmp_path: Path) -> None:
    manifest = dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2},
                      "layers": []})
    cache = Layout(tmp_path / "cache", remember_checks=True)
    digest = cache.put_bytes(manifest)
    cache.set_refs({"reg.example/org/app:1": Descriptor("application/vnd.oci.image.manifest.v1+json", digest,
                                                        len(manifest))})
    with pytest.raises(RegistryError, match=f"manifest {digest} from cache is malformed: 'digest'"):
        pull(["reg.example/org/app:1"], layout=tmp_path / "out", cache=cache, offline=True, platforms=AMD64)
