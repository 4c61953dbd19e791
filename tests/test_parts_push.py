"""`build --max-part-size` and `push NAME.parts.json` against a real docker-registry: a bundle built by the
real `build` from a real registry, written as parts smaller than its 1.5 MiB layers, pushed from the parts
(blobs stream across part edges) and read back by skopeo, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import test_update
from tests.support.registry import running_registry
from tests.support.shipped import Shipped, ship
from tests.test_push import check_served
from tests.test_update import Pair

pair = test_update.pair  # the update-bundle fixture: a base, and an update built against it


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, registry: Any, run_cli: Any) -> Shipped:
    return ship(tmp_path_factory.mktemp("shipped-parts"), registry, run_cli)


def test_build_max_part_size_needs_a_key(shipped: Shipped, run_cli: Any) -> None:
    done = run_cli("build", "bundle.yaml", "--output", "x.bundle.tar", "--unsigned", "--max-part-size", "1MiB",
                   cwd=shipped.work)
    assert done.returncode == 2 and "--max-part-size needs --key" in done.stderr, done.stderr
    assert not (shipped.work / "x.bundle.tar").exists()
    text = run_cli("build", "bundle.yaml", "--output", "text.bundle.tar", "--key", "vendor.key", "--cache",
                   str(shipped.work / "cache"), "--max-part-size", "1MiB", cwd=shipped.work)
    assert text.returncode == 0, text.stderr
    assert "wrote text.bundle.tar (" in text.stdout and "parts of text.bundle.tar" in text.stdout
    assert "text.bundle.tar.parts.json, signed by vendor with SHA256:" in text.stdout
    assert not (shipped.work / "text.bundle.tar").exists() and (shipped.work / "text.bundle.tar.part-0001").exists()


def test_build_in_parts_then_push_from_the_parts_reads_back(shipped: Shipped, run_cli: Any, tmp_path: Path) -> None:
    built = run_cli("build", "bundle.yaml", "--output", "split.bundle.tar", "--key", "vendor.key", "--cert",
                    "vendor.crt", "--cache", str(shipped.work / "cache"), "--max-part-size", "700KiB", "--json",
                    cwd=shipped.work)
    assert built.returncode == 0, built.stderr
    doc = json.loads(built.stdout)
    index = shipped.work / "split.bundle.tar.parts.json"
    assert doc["parts"]["index"] == index.name and len(doc["parts"]["parts"]) >= 6
    assert not (shipped.work / "split.bundle.tar").exists()  # the parts are the output
    sizes = [p["size"] for p in doc["parts"]["parts"]]
    assert all(s == 700 * 1024 for s in sizes[:-1])
    # the same bytes as the single-file build of the same spec and cache (reproducible), bar the signature
    single = shipped.bundle.read_bytes()
    assert doc["parts"]["statementSha256"] == doc["statementSha256"]
    joined = b"".join((shipped.work / p["name"]).read_bytes() for p in doc["parts"]["parts"])
    signature_at = joined.find(b"signatures/vendor.sigstore.json")
    assert joined[:signature_at] == single[:signature_at]

    with running_registry(tmp_path / "target") as target:
        done = run_cli("push", str(index), "--policy", str(shipped.policy), "--registry", target.host,
                       "--insecure-registry", target.host, "--json", "--audit-log", str(tmp_path / "audit.jsonl"),
                       "--chunk-size", "1", cwd=shipped.work)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert f"parts: {len(sizes)} parts of split.bundle.tar" in done.stderr
        assert result["readback"]["problems"] == [] and result["totals"]["uploaded"] > 0
        # the 1.5 MiB layers lie across two or three 700 KiB parts and arrived whole
        big = [b for b in result["blobs"] if b["size"] > 1 << 20]
        assert big and all(b["state"] in ("uploaded", "mounted") for b in big)
        assert check_served(shipped, target.host, "--tls-verify=false") == 3 + 2 + 4 + 2

        # a damaged part: named, and nothing is sent
        part = shipped.work / doc["parts"]["parts"][1]["name"]
        original = part.read_bytes()
        part.write_bytes(original[:100] + b"X" + original[101:])
        try:
            with running_registry(tmp_path / "other") as other:
                res = run_cli("push", str(index), "--policy", str(shipped.policy), "--registry", other.host,
                              "--insecure-registry", other.host, "--audit-log", str(tmp_path / "audit.jsonl"),
                              cwd=shipped.work)
                assert res.returncode == 31, res.stderr
                assert f"part 2 of {len(sizes)} ({part.name}) is damaged" in res.stderr
                assert "push: target" not in res.stderr + res.stdout
        finally:
            part.write_bytes(original)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != "verification.json"}


def test_an_update_bundle_in_parts_verifies_with_its_base(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    """Parts and update bundles together: `verify UPDATE.parts.json --base PREVIOUS` reads the update's
    parts in place and extracts the same tree as the single update file."""
    work = pair.shipped.work
    done = run_cli("split", str(pair.update), "--max-part-size", "512KiB", "--key", str(work / "vendor.key"),
                   "--cert", str(work / "vendor.crt"), "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    index = tmp_path / "update.bundle.tar.parts.json"
    policy = str(pair.shipped.policy)
    res = run_cli("verify", str(index), "--base", str(pair.base), "--policy", policy, "--extract",
                  str(tmp_path / "from-parts"))
    assert res.returncode == 0, res.stderr
    assert "parts: " in res.stdout and "base ok: " in res.stdout
    single = run_cli("verify", str(pair.update), "--base", str(pair.base), "--policy", policy, "--extract",
                     str(tmp_path / "from-file"))
    assert single.returncode == 0, single.stderr
    assert _tree(tmp_path / "from-parts") == _tree(tmp_path / "from-file")
    alone = run_cli("verify", str(index), "--policy", policy)
    assert alone.returncode == 28, alone.stderr  # an update in parts still needs its base
