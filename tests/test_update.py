"""Update bundles end to end (issue 13): the real `build --base`, `verify --base`, `push --base` and `inspect`,
with images in a real docker-registry and real keys.

The base is the shipped bundle (tests/support/shipped.py: shop 1.0.0 with web, app and tool:3.1). The
update's spec is the same but for one image, tool:3.2, a new image over the same shared base layer; a full
build of that spec is the reference the pair must equal.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO
from tests.support.images import Pusher, make_layer, multi_platform
from tests.support.registry import running_registry
from tests.support.shipped import Shipped, ship

BLOBS = "images/blobs/sha256/"
OWN = ("bundle.intoto.json", "signatures/", ".airgap-bundle/")  # what differs between any two signed builds


@dataclass(frozen=True)
class Pair:
    shipped: Shipped
    base: Path
    update: Path
    full: Path
    new_blobs: frozenset[str]  # every blob of the changed image that the base does not hold

    def run(self, run_cli: Any, *args: str) -> Any:
        return run_cli(*args, cwd=self.shipped.work)


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _predicate(bundle: Path) -> dict[str, Any]:
    return json.loads(_members(bundle)["bundle.intoto.json"])["predicate"]  # type: ignore[no-any-return]


def _blobs(bundle: Path) -> set[str]:
    return {n[len(BLOBS):] for n in _members(bundle) if n.startswith(BLOBS)}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, registry: Any, run_cli: Any) -> Pair:
    work = tmp_path_factory.mktemp("update")
    shipped = ship(work, registry, run_cli)
    # one image changes: tool 3.1 -> 3.2, new own layers over the same shared base layer
    tool = multi_platform("team/tool", seed="ship-3.2", platforms=("linux/amd64", "linux/arm64"),
                          base=[make_layer("shipped-base", 64 * 1024)], layer_size=1536 * 1024, layers=2)
    Pusher.to(registry).push("quay.io/team/tool", tool, "3.2")
    spec = yaml.safe_load((work / "bundle.yaml").read_text())
    spec["metadata"]["version"] = "1.1.0"
    spec["extraImages"] = [{"ref": "quay.io/team/tool:3.2", "reason": "started by the app at run time"}]
    v2 = work / "v2"
    shutil.copytree(work / "manifests", v2 / "manifests")
    (v2 / "bundle.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    sign = ["--key", "../vendor.key", "--cert", "../vendor.crt", "--cache", str(work / "cache")]
    built = run_cli("build", "bundle.yaml", "--output", "update.bundle.tar", *sign, "--base", "../shop.bundle.tar",
                    "--base-policy", "../policy.yaml", cwd=v2)
    assert built.returncode == 0, built.stderr
    assert "base: ../shop.bundle.tar is shop 1.0.0 (statement sha256:" in built.stderr  # verified before the build
    assert re.search(r"^update of shop 1\.0\.0 \(statement sha256:[0-9a-f]{64}\): \d+ image blob\(s\) \([\d,]+ bytes\) "
                     r"taken from the base, not carried$", built.stdout, re.M), built.stdout
    full = run_cli("build", "bundle.yaml", "--output", "full.bundle.tar", *sign, cwd=v2)
    assert full.returncode == 0, full.stderr
    new = {b.digest.removeprefix("sha256:") for image in tool.images for b in image.blobs()}
    new |= {i.digest.removeprefix("sha256:") for i in (tool, *tool.images)}
    return Pair(shipped, shipped.bundle, v2 / "update.bundle.tar", v2 / "full.bundle.tar",
                frozenset(new - _blobs(shipped.bundle)))


def test_update_carries_only_the_changed_images_new_blobs_and_names_the_rest(pair: Pair) -> None:
    # exactly the new image's index, manifests, configs and own layers: 1 + 2 + 2 + 4
    assert len(pair.new_blobs) == 9
    assert _blobs(pair.update) == pair.new_blobs
    predicate = _predicate(pair.update)
    base = predicate["base"]
    assert base["statementDigest"] == "sha256:" + hashlib.sha256(_members(pair.base)["bundle.intoto.json"]).hexdigest()
    assert (base["name"], base["version"]) == ("shop", "1.0.0")
    # files + base.files is exactly what the full build lists
    listed = {f["path"]: f for f in predicate["files"]}
    taken = {f["path"]: f for f in base["files"]}
    assert not set(listed) & set(taken)
    assert {**listed, **taken} == {f["path"]: f for f in _predicate(pair.full)["files"]}
    # everything small is carried in full; the update is the full bundle less the blobs it takes
    assert {p for p in listed if not p.startswith(BLOBS)} >= {"images/index.json", "images/oci-layout",
                                                              "sbom.cdx.json", "provenance.intoto.json"}
    saved = pair.full.stat().st_size - pair.update.stat().st_size
    assert saved > sum(f["size"] for f in taken.values()) - 10240  # within the tar's last record


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).as_posix().startswith(OWN)}


def test_pair_verifies_and_extracts_exactly_what_a_full_build_extracts(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    policy = str(pair.shipped.policy)
    done = pair.run(run_cli, "verify", str(pair.update), "--base", str(pair.base), "--policy", policy,
                    "--extract", str(tmp_path / "pair"))
    assert done.returncode == 0, done.stderr
    assert "base ok: " in done.stdout and "shop 1.0.0" in done.stdout
    full = pair.run(run_cli, "verify", str(pair.full), "--policy", policy, "--extract", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    # the verification record says the extraction is an update and names the base it was verified with
    statement = hashlib.sha256(_members(pair.base)["bundle.intoto.json"]).hexdigest()
    pair_record = json.loads((tmp_path / "pair" / ".airgap-bundle" / "verification.json").read_text())
    assert pair_record["base"] == {"statementSha256": statement, "name": "shop", "version": "1.0.0"}
    assert "base" not in json.loads((tmp_path / "full" / ".airgap-bundle" / "verification.json").read_text())
    got, want = _tree(tmp_path / "pair"), _tree(tmp_path / "full")
    assert sorted(got) == sorted(want)
    assert [n for n in want if got[n] != want[n]] == []
    assert len([n for n in want if n.startswith(BLOBS)]) > len(pair.new_blobs)
    as_json = json.loads(pair.run(run_cli, "verify", str(pair.update), "--base", str(pair.base), "--policy", policy,
                                  "--json").stdout)
    assert as_json["ok"] and as_json["base"]["blobsFromBase"] == len(_predicate(pair.update)["base"]["files"])


def test_update_alone_is_refused_naming_its_base(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    digest = _predicate(pair.update)["base"]["statementDigest"]
    for args in (["verify", str(pair.update), "--policy", str(pair.shipped.policy), "--extract", str(tmp_path / "x")],
                 ["push", str(pair.update), "--policy", str(pair.shipped.policy), "--registry", "127.0.0.1:9",
                  "--audit-log", str(tmp_path / "audit.jsonl")]):
        done = pair.run(run_cli, *args)
        assert done.returncode == 28, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert f"it needs its base shop 1.0.0 (statement {digest})" in line and "--base PREVIOUS.bundle.tar" in line
    assert not (tmp_path / "x").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".x")]
    shown = pair.run(run_cli, "inspect", str(pair.update))
    assert shown.returncode == 0, shown.stderr
    assert f"update     of shop 1.0.0 (statement {digest}): takes " in shown.stdout
    inspected = json.loads(pair.run(run_cli, "inspect", str(pair.update), "--json").stdout)
    jsonschema.validate(inspected, json.loads((REPO / "bundler/schemas/inspection.schema.json").read_text()))
    assert inspected["update"]["base"] == {"statementDigest": digest, "name": "shop", "version": "1.0.0"}
    assert json.loads(pair.run(run_cli, "inspect", str(pair.base), "--json").stdout)["update"] is None


def test_wrong_base_is_refused_naming_both_statement_digests(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    named = _predicate(pair.update)["base"]["statementDigest"]
    other = "sha256:" + hashlib.sha256(_members(pair.full)["bundle.intoto.json"]).hexdigest()
    done = pair.run(run_cli, "verify", str(pair.update), "--base", str(pair.full), "--policy", str(pair.shipped.policy),
                    "--extract", str(tmp_path / "x"))
    assert done.returncode == 28, done.stderr
    assert f"its statement is {other}, the update needs shop 1.0.0 (statement {named})" in done.stderr
    assert not (tmp_path / "x").exists()


def _tampered(bundle: Path, out: Path, blob: str) -> Path:
    """A copy of `bundle` with one byte of member `blob` flipped (its statement and signatures intact)."""
    shutil.copyfile(bundle, out)
    with tarfile.open(bundle) as tar:
        offset = tar.getmember(blob).offset_data
    with out.open("r+b") as f:
        f.seek(offset + 100)
        byte = f.read(1)
        f.seek(offset + 100)
        f.write(bytes([byte[0] ^ 1]))
    return out


def test_tampered_base_is_refused_with_the_verifiers_code(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    taken = max(_predicate(pair.update)["base"]["files"], key=lambda f: f["size"])["path"]
    bad = _tampered(pair.base, tmp_path / "bad-base.tar", taken)
    done = pair.run(run_cli, "verify", str(pair.update), "--base", str(bad), "--policy", str(pair.shipped.policy),
                    "--extract", str(tmp_path / "x"))
    assert done.returncode == 26, done.stderr
    assert f"{taken} hashes to sha256:" in done.stderr
    assert not (tmp_path / "x").exists()


def test_build_refuses_a_base_that_fails_verification(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    bad = _tampered(pair.base, tmp_path / "bad-base.tar",
                    max(_predicate(pair.update)["base"]["files"], key=lambda f: f["size"])["path"])
    v2 = pair.update.parent
    common = ["build", "bundle.yaml", "--output", str(tmp_path / "u.tar"), "--unsigned",
              "--cache", str(pair.shipped.work / "cache")]
    done = run_cli(*common, "--base", str(bad), "--base-policy", str(pair.shipped.policy), cwd=v2)
    assert done.returncode == 26, done.stderr
    assert "bad-base.tar" in done.stderr and "hashes to sha256:" in done.stderr
    alone = run_cli(*common, "--base", str(pair.base), cwd=v2)
    assert alone.returncode == 2 and "--base and --base-policy go together" in alone.stderr
    an_update = run_cli(*common, "--base", str(pair.update), "--base-policy", str(pair.shipped.policy), cwd=v2)
    assert an_update.returncode == 28 and "it needs its base shop 1.0.0" in an_update.stderr
    assert not (tmp_path / "u.tar").exists()


def test_push_of_the_pair_into_a_fresh_registry_reads_back(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    with running_registry(tmp_path / "target") as target:
        done = pair.run(run_cli, "push", str(pair.update), "--base", str(pair.base), "--policy",
                        str(pair.shipped.policy), "--registry", target.host, "--insecure-registry", target.host,
                        "--audit-log", str(tmp_path / "audit.jsonl"), "--json")
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        assert result["readback"]["problems"] == [] and len(result["images"]) == 3
        assert result["base"]["name"] == "shop" and result["totals"]["missing"] == 0
        pushed = {b["digest"].removeprefix("sha256:") for b in result["blobs"] if b["state"] == "uploaded"}
        assert pushed - _blobs(pair.update), "some uploaded blobs must have come from the base"
        tool = next(i for i in result["images"] if "team/tool" in i["target"])
        assert tool["target"].startswith(f"{target.host}/quay.io/team/tool:3.2@")
    (logged,) = (json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines())
    statement = hashlib.sha256(_members(pair.base)["bundle.intoto.json"]).hexdigest()
    assert logged["base"] == {"statementSha256": statement, "name": "shop", "version": "1.0.0"}
    shown = pair.run(run_cli, "inspect", "--record", str(tmp_path / "audit.jsonl"))
    assert f"update of shop 1.0.0  statement sha256:{statement}" in shown.stdout, shown.stdout + shown.stderr


def test_a_cosigned_update_verifies_with_its_base(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    """Co-signing an update is co-signing any bundle: the signature covers the update's statement, which
    binds the base by digest. The base is verified with the same policy, so it needs the co-signature too."""
    work = pair.shipped.work
    assert run_cli("keys", "generate", "--out", str(tmp_path / "customer"), "--type", "ed25519").returncode == 0
    copies = {}
    for bundle in (pair.update, pair.base):
        copies[bundle] = tmp_path / bundle.name
        shutil.copyfile(bundle, copies[bundle])
    policy = tmp_path / "both.yaml"
    policy.write_text(f"apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\nauthorities:\n"
                      f"  - name: vendor\n    roots: [{work / 'root.crt'}]\n"
                      f"  - name: customer\n    required: true\n    keys: [{{path: {tmp_path / 'customer.pub'}}}]\n")
    signed = run_cli("sign", str(copies[pair.update]), "--authority", "customer", "--key", str(tmp_path / "customer.key"))
    assert signed.returncode == 0, signed.stderr
    unsigned_base = run_cli("verify", str(copies[pair.update]), "--base", str(copies[pair.base]), "--policy", str(policy))
    assert unsigned_base.returncode == 22, unsigned_base.stderr
    assert f"{copies[pair.base]}: required signature missing: customer" in unsigned_base.stderr
    assert run_cli("sign", str(copies[pair.base]), "--authority", "customer",
                   "--key", str(tmp_path / "customer.key")).returncode == 0
    done = run_cli("verify", str(copies[pair.update]), "--base", str(copies[pair.base]), "--policy", str(policy))
    assert done.returncode == 0, done.stderr
    assert "signature ok: customer" in done.stdout and "base ok: " in done.stdout


def test_a_split_base_serves_build_verify_and_push(pair: Pair, run_cli: Any, tmp_path: Path) -> None:
    """The base as it arrives on size-limited media: its parts and signed index, never joined."""
    media = tmp_path / "media"
    media.mkdir()
    done = pair.run(run_cli, "split", str(pair.base), "--max-part-size", str(pair.base.stat().st_size // 3 + 1),
                    "--key", "vendor.key", "--cert", "vendor.crt", "--output-dir", str(media))
    assert done.returncode == 0, done.stderr
    index = media / (pair.base.name + ".parts.json")
    assert len(list(media.glob("*.part-*"))) == 3
    policy = str(pair.shipped.policy)
    verified = pair.run(run_cli, "verify", str(pair.update), "--base", str(index), "--policy", policy,
                        "--extract", str(tmp_path / "pair"))
    assert verified.returncode == 0, verified.stderr
    assert f"base ok: {index} is shop 1.0.0" in verified.stdout
    full = pair.run(run_cli, "verify", str(pair.full), "--policy", policy, "--extract", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr
    assert _tree(tmp_path / "pair") == _tree(tmp_path / "full")
    with running_registry(tmp_path / "target") as target:
        pushed = pair.run(run_cli, "push", str(pair.update), "--base", str(index), "--policy", policy,
                          "--registry", target.host, "--insecure-registry", target.host,
                          "--audit-log", str(tmp_path / "audit.jsonl"), "--json")
        assert pushed.returncode == 0, pushed.stderr
        assert json.loads(pushed.stdout)["readback"]["problems"] == []
    v2 = pair.update.parent
    rebuilt = run_cli("build", "bundle.yaml", "--output", str(tmp_path / "again.bundle.tar"), "--key", "../vendor.key",
                      "--cert", "../vendor.crt", "--cache", str(pair.shipped.work / "cache"), "--base", str(index),
                      "--base-policy", "../policy.yaml", cwd=v2)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert _blobs(tmp_path / "again.bundle.tar") == pair.new_blobs
    # a part missing from the media: named, exit 31, before anything is extracted
    (media / f"{pair.base.name}.part-0002").unlink()
    missing = pair.run(run_cli, "verify", str(pair.update), "--base", str(index), "--policy", policy,
                       "--extract", str(tmp_path / "never"))
    assert missing.returncode == 31, missing.stderr
    assert f"part 2 of 3 ({pair.base.name}.part-0002) is missing" in missing.stderr
    assert not (tmp_path / "never").exists()


def test_an_update_built_on_an_empty_cache_downloads_only_what_the_base_lacks(pair: Pair, run_cli: Any) -> None:
    """A CI runner that starts empty has the previous bundle, not its images: the blobs the base holds
    are taken from it, so they are never downloaded (only the manifests, to know what the images are),
    and the update is the same as one built on the full cache."""
    v2, cache = pair.update.parent, pair.update.parent / "empty-cache"
    built = run_cli("build", "bundle.yaml", "--output", "cold-update.bundle.tar", "--key", "../vendor.key",
                    "--cert", "../vendor.crt", "--cache", str(cache), "--base", "../shop.bundle.tar",
                    "--base-policy", "../policy.yaml", cwd=v2)
    assert built.returncode == 0, built.stderr
    fetched = {p.name for p in (cache / "blobs/sha256").iterdir() if p.is_file()}
    base_blobs = _blobs(pair.base)
    assert pair.new_blobs <= fetched
    for name in fetched & base_blobs:  # from the base, only what says what an image is
        media_type = json.loads((cache / "blobs/sha256" / name).read_bytes()).get("mediaType", "")
        assert "manifest" in media_type or "index" in media_type, (name, media_type)
    assert any(n not in fetched for n in base_blobs)  # the base's layers and configs stayed where they are
    same = {n: d for n, d in _members(v2 / "cold-update.bundle.tar").items() if not n.startswith("signatures/")}
    assert same == {n: d for n, d in _members(pair.update).items() if not n.startswith("signatures/")}
    # the cache names no image it lacks a blob of (an offline run would otherwise take it as complete)
    index = json.loads((cache / "index.json").read_bytes())
    for entry in index["manifests"]:
        top = json.loads((cache / "blobs/sha256" / entry["digest"].removeprefix("sha256:")).read_bytes())
        children = [json.loads((cache / "blobs/sha256" / m["digest"][7:]).read_bytes()) for m in top.get("manifests", [])]
        needed = {d["digest"][7:] for m in (children or [top]) for d in (m["config"], *m["layers"])}
        assert needed <= fetched, entry
