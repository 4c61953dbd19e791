"""Update bundles on small real bundles (tests/support/bundles.py): the statement rules for `base.files`,
each refusal of a pair with its exit code, extraction of the union, and push's reads from the base.
The end-to-end flow with the real build, registry and CLI is tests/test_update.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bundler import archive, attest, push, update, verify
from bundler.bom import PREDICATE_TYPE, BaseEntry, FileEntry
from bundler.errors import (
    ArchiveError,
    BaseRequiredError,
    InputError,
    StatementMismatchError,
    UnlistedMemberError,
    UsageError,
)
from tests.support.bundles import NOW, BuiltBundle, build_bundle, describe, sha, small_payload
from tests.support.bundles import world as make_world


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    w = make_world(tmp_path)
    w["base"] = build_bundle(tmp_path / "base.tar", {"vendor": w["vendor"]})
    return w


def _blob_paths(payload: dict[str, bytes]) -> list[str]:
    return sorted(p for p in payload if p.startswith(verify.BLOBS_DIR))


def make_update(world: dict[str, Any], *, take: list[str] | None = None, listed: list[FileEntry] | None = None,
                digest: str | None = None, name: str = "upd.tar") -> BuiltBundle:
    """An update of world["base"]: its payload less the blobs `take` (default: all of them), which
    `base.files` lists (or `listed`, to break the rules), naming the base by `digest`."""
    payload = small_payload()
    index = payload.pop("_index")
    take = _blob_paths(payload) if take is None else take
    kept = {p: b for p, b in payload.items() if p not in take}
    files = [FileEntry(p, len(payload[p]), sha(payload[p])) for p in take] if listed is None else listed
    base = BaseEntry(digest or "sha256:" + sha(world["base"].statement), "demo", "1.0.0", tuple(files))
    bom = dataclasses.replace(describe(kept, index), base=base)
    statement = attest.statement(bom.subjects(), PREDICATE_TYPE, bom.to_dict())
    return build_bundle(world["tmp"] / name, {"vendor": world["vendor"]}, files=kept, statement=statement)


def test_pair_extracts_the_full_payload_and_the_update_alone_is_refused(world: dict[str, Any]) -> None:
    upd = make_update(world)
    assert not [p for p in upd.files if p.startswith(verify.BLOBS_DIR)]  # every blob comes from the base
    alone = verify.verify(upd.path, world["trust"], now=NOW)
    assert isinstance(alone.failure, BaseRequiredError) and alone.failure.exit_code == 28
    assert str(alone.failure) == (f"{upd.path} is an update bundle: it needs its base demo 1.0.0 (statement "
                                  f"sha256:{sha(world['base'].statement)}) (pass --base PREVIOUS.bundle.tar, the full "
                                  "bundle it was built against)")
    with pytest.raises(BaseRequiredError):
        verify.verify_and_extract(upd.path, world["trust"], world["tmp"] / "alone", now=NOW)
    assert not (world["tmp"] / "alone").exists()
    dest = world["tmp"] / "out"
    result = update.verify_pair_and_extract(upd.path, world["base"].path, world["trust"], dest, now=NOW)
    assert result.statement_sha256 == sha(upd.statement)
    payload = small_payload()
    payload.pop("_index")
    for name, data in {**payload, archive.STATEMENT: upd.statement}.items():
        assert (dest / name).read_bytes() == data
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == sorted(
        [*payload, archive.STATEMENT, "signatures/vendor.sigstore.json"])
    with pytest.raises(UsageError, match="already exists"):
        update.verify_pair_and_extract(upd.path, world["base"].path, world["trust"], dest, now=NOW)


@pytest.mark.parametrize(("listed", "why"), [
    (lambda p: [FileEntry("sbom.cdx.json", len(p["sbom.cdx.json"]), sha(p["sbom.cdx.json"]))], "'sbom.cdx.json'"),
    (lambda p: [FileEntry(b, len(p[b]), sha(p[b])) for b in _blob_paths(p)[:1] * 2], "each once"),
], ids=["not-a-blob", "listed-twice"])
def test_base_files_lists_only_image_blobs_each_once(world: dict[str, Any], listed: Any, why: str) -> None:
    payload = small_payload()
    upd = make_update(world, take=_blob_paths(payload)[:1], listed=listed(payload))
    result = verify.verify(upd.path, world["trust"], now=NOW)
    assert isinstance(result.failure, StatementMismatchError) and result.failure.exit_code == 29
    assert "predicate.base.files lists" in str(result.failure) and why in str(result.failure)


def test_base_files_never_lists_a_blob_the_update_carries(world: dict[str, Any]) -> None:
    payload = small_payload()
    first, second = _blob_paths(payload)[:2]
    upd = make_update(world, take=[first], listed=[FileEntry(p, len(payload[p]), sha(payload[p])) for p in (first, second)])
    result = verify.verify(upd.path, world["trust"], now=NOW)
    assert isinstance(result.failure, StatementMismatchError) and repr(second) in str(result.failure)


def test_an_image_subject_needs_its_index_carried_or_taken(world: dict[str, Any]) -> None:
    payload = small_payload()
    index = verify.BLOBS_DIR + sha(payload["_index"])
    upd = make_update(world, take=[index], listed=[])  # omitted, yet not named as taken from the base
    result = verify.verify(upd.path, world["trust"], now=NOW)
    assert isinstance(result.failure, StatementMismatchError) and "is not carried under" in str(result.failure)


def test_a_wrong_base_is_refused_by_its_statement_digest_before_it_is_hashed(world: dict[str, Any]) -> None:
    upd = make_update(world, digest="sha256:" + "ab" * 32)
    truncated = world["tmp"] / "truncated-base.tar"  # its members would fail hashing: never reached
    data = world["base"].path.read_bytes()
    truncated.write_bytes(data[:-20480] + b"\0" * 20480)
    assert verify.verify(truncated, world["trust"], now=NOW).failure is not None
    for base in (world["base"].path, truncated):
        with pytest.raises(BaseRequiredError) as info:
            update.verify_pair_and_extract(upd.path, base, world["trust"], world["tmp"] / "x", now=NOW)
        assert info.value.exit_code == 28
        assert (f"{base} is not the base of {upd.path}: its statement is sha256:{sha(world['base'].statement)}, "
                f"the update needs demo 1.0.0 (statement sha256:{'ab' * 32})") in str(info.value)
    assert not (world["tmp"] / "x").exists()


def test_the_base_must_hold_every_file_the_update_takes_with_that_size(world: dict[str, Any]) -> None:
    payload = small_payload()
    blob = _blob_paths(payload)[0]
    absent = b"never in the base"
    for listed, said in (([FileEntry(blob, len(payload[blob]) + 1, sha(payload[blob]))], "holds other bytes"),
                         ([FileEntry(verify.BLOBS_DIR + sha(absent), len(absent), sha(absent))], "lacks it")):
        upd = make_update(world, take=[listed[0].path] if listed[0].path in payload else [], listed=listed)
        with pytest.raises(StatementMismatchError) as info:
            update.verify_pair_and_extract(upd.path, world["base"].path, world["trust"], world["tmp"] / "x", now=NOW)
        assert info.value.exit_code == 29 and said in str(info.value)
        assert not (world["tmp"] / "x").exists()


def test_a_full_bundle_needs_no_base_and_a_missing_base_is_one_line(world: dict[str, Any]) -> None:
    other = build_bundle(world["tmp"] / "full.tar", {"vendor": world["vendor"]})
    with pytest.raises(UsageError, match="is a full bundle, not an update"):
        with update.open_pair(other.path, world["base"].path, world["trust"], now=NOW):
            pass  # pragma: no cover - refused on entry
    with pytest.raises(InputError, match="cannot open the bundle"):
        with update.open_pair(make_update(world).path, world["tmp"] / "gone.tar", world["trust"], now=NOW):
            pass  # pragma: no cover - refused on entry


def test_load_base_describes_a_verified_bundle_and_split_takes_only_identical_blobs(world: dict[str, Any]) -> None:
    base = update.load_base(world["base"].path, world["trust"], now=NOW)
    assert (base.name, base.version, base.statement_digest) == ("demo", "1.0.0", "sha256:" + sha(world["base"].statement))
    payload = small_payload()
    payload.pop("_index")
    blob = _blob_paths(payload)[0]
    files = [FileEntry(p, len(b), sha(b)) for p, b in payload.items()]
    other = FileEntry(verify.BLOBS_DIR + "0" * 64, 3, "0" * 64)
    carried, taken = update.split([*files, other], base)
    assert {f.path for f in taken} == set(_blob_paths(payload))  # blobs only: never sbom, index.json, ...
    assert other in carried and blob not in {f.path for f in carried}
    with pytest.raises(BaseRequiredError):  # an update is no base: it lacks blobs of its own base
        update.load_base(make_update(world).path, world["trust"], now=NOW)


def test_push_reads_the_blobs_an_update_takes_from_its_base(world: dict[str, Any]) -> None:
    upd = make_update(world)
    payload = small_payload()
    with push.open_verified(upd.path, world["trust"], now=NOW, base=world["base"].path) as bundle:
        assert bundle.base is not None and bundle.base.path == world["base"].path
        for path in _blob_paths(payload):
            digest = "sha256:" + path.rsplit("/", 1)[1]
            assert bundle.blob(digest) == payload[path]
            assert b"".join(bundle.reader(digest)(0, len(payload[path]))) == payload[path]
        assert bundle.read("manifests/deployment.yaml") == payload["manifests/deployment.yaml"]
        with pytest.raises(ArchiveError, match="is not in the bundle"):
            bundle.blob("sha256:" + "0" * 64)
    with pytest.raises(BaseRequiredError):
        with push.open_verified(upd.path, world["trust"], now=NOW):
            pass  # pragma: no cover - refused on entry


def test_extract_refuses_members_of_another_archive_that_are_missing_or_shadow_its_own(world: dict[str, Any]) -> None:
    base = world["base"]
    own = {archive.STATEMENT: (len(base.statement), sha(base.statement))}
    own.update({n: (len(b), sha(b)) for n, b in base.files.items()})
    own.update({archive.signature_name(a): (len(s), sha(s)) for a, s in base.signatures.items()})
    blob = _blob_paths(base.files)[0]
    for wanted in ({"images/blobs/sha256/" + "0" * 64: (1, "0" * 64)}, {blob: own[blob]}):
        with open(base.path, "rb") as other:
            with pytest.raises(UnlistedMemberError, match="not all there, or overlap"):
                archive.extract(base.path, world["tmp"] / "x", own, also=[(other, wanted)])
        assert not (world["tmp"] / "x").exists()
        assert not [p for p in world["tmp"].iterdir() if p.name.startswith(".x")]
