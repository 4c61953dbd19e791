"""A bundle in parts (bundler/parts.py): split with real keys, the signed index checked against the policy
first, each part's size before any hashing, a damaged part named exactly, and the set read as one bundle by
verify, inspect and extract, never copied. Push and build with parts: tests/test_parts_push.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bundler import archive, keys, parts, sign, verify
from bundler.attest import canonical_json
from bundler.bundlefile import open_file
from bundler.errors import (
    ArchiveError,
    BadSignatureError,
    InputError,
    PartError,
    UsageError,
    VerificationError,
)
from tests.conftest import REPO
from tests.support.bundles import NOW, build_bundle, sha
from tests.support.bundles import world as make_world

PART = 1000  # bytes: every member of the small bundle lies within a few parts, blobs and headers straddle them


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A signed bundle (vendor + customer), split by the CLI's own library call into 1000-byte parts."""
    tmp = tmp_path_factory.mktemp("parts")
    w = make_world(tmp)
    built = build_bundle(tmp / "app.bundle.tar", {"vendor": w["vendor"], "customer": w["customer"]})
    out = tmp / "set"
    out.mkdir()
    done = parts.split(built.path, PART, w["vendor"], out_dir=out)
    return {**w, "built": built, "set": out, "done": done}


def copy_set(made: dict[str, Any], dest: Path) -> Path:
    """A private copy of the set; returns its index path."""
    shutil.copytree(made["set"], dest)
    return dest / "app.bundle.tar.parts.json"


def resign(index_path: Path, index: parts.PartsIndex, signer: keys.Signer, authority: str = "vendor") -> None:
    index_path.write_bytes(sign.sign(index.to_bytes(), signer, authority, payload_type=parts.PAYLOAD_TYPE))


def cli_verify(run_cli: Any, made: dict[str, Any], index: Path, *extra: str) -> Any:
    return run_cli("verify", str(index), "--policy", str(made["policy"]), *extra)


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "size"), [("4GiB", 4 << 30), ("4095MiB", 4095 << 20), ("700MB", 700_000_000),
                                            ("1.5GB", 1_500_000_000), ("65536", 65536), ("2 kib", 2048),
                                            ("1TB", 10**12), ("1b", 1)])
def test_sizes_take_binary_and_decimal_suffixes(text: str, size: int) -> None:
    assert parts.parse_size(text) == size


@pytest.mark.parametrize(("text", "why"), [("4G", "ambiguous"), ("4g", "ambiguous"), ("0", "less than one byte"),
                                           ("0.1", "less than one byte"), ("four", "not a size"),
                                           ("4 parsecs", "not a size"), ("-1GiB", "not a size")])
def test_bad_sizes_are_refused_with_what_to_write(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as info:
        parts.parse_size(text)
    assert "4GiB (binary" in str(info.value) or why == "less than one byte"


def test_cli_bad_size_is_one_line_exit_2(made: dict[str, Any], run_cli: Any) -> None:
    done = run_cli("split", str(made["built"].path), "--max-part-size", "4G", "--key", str(made["tmp"] / "pki/vendor.key"))
    assert done.returncode == 2 and "ambiguous" in done.stderr and "4GiB (binary" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --- split ---------------------------------------------------------------------------------------


def test_split_writes_byte_ranges_and_a_signed_index(made: dict[str, Any]) -> None:
    built, out, done = made["built"], made["set"], made["done"]
    data = built.path.read_bytes()
    names = sorted(p.name for p in out.iterdir())
    count = -(-len(data) // PART)
    assert names == [f"app.bundle.tar.part-{i:04d}" for i in range(1, count + 1)] + ["app.bundle.tar.parts.json"]
    joined = b"".join((out / f"app.bundle.tar.part-{i:04d}").read_bytes() for i in range(1, count + 1))
    assert joined == data  # `cat NAME.part-*` is the bundle again
    assert all(p.size == PART for p in done.index.parts[:-1]) and 0 < done.index.parts[-1].size <= PART
    assert done.index.sha256 == sha(data) and done.index.statement_sha256 == sha(built.statement)
    # the index is a Sigstore bundle with its own payloadType, signed by the vendor's certificate
    envelope = json.loads((out / "app.bundle.tar.parts.json").read_bytes())
    assert envelope["dsseEnvelope"]["payloadType"] == "application/vnd.airgap-bundle.parts.v1+json"
    assert "certificate" in envelope["verificationMaterial"]
    payload = base64.b64decode(envelope["dsseEnvelope"]["payload"])
    assert payload == done.index.to_bytes() and json.loads(payload)["authority"] == "vendor"
    # members and blobs straddle parts (the point of the tiny size)
    index = archive.read_index(built.path)
    straddling = [m for m in index.members if m.size and m.data_offset // PART != (m.data_offset + m.size - 1) // PART]
    assert any(m.name.startswith("images/blobs/") for m in straddling)


def test_cli_split_then_verify_extract_equals_the_single_file(made: dict[str, Any], run_cli: Any) -> None:
    tmp = made["tmp"]
    work = tmp / "cli-split"
    work.mkdir()
    shutil.copy(made["built"].path, work / "app.bundle.tar")
    done = run_cli("split", str(work / "app.bundle.tar"), "--max-part-size", "1000", "--key",
                   str(tmp / "pki/vendor.key"), "--cert", str(tmp / "pki/vendor.crt"), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["index"] == str(work / "app.bundle.tar.parts.json") and len(doc["parts"]) > 10
    assert (work / "app.bundle.tar").exists()  # split keeps the bundle
    assert not [p for p in work.iterdir() if p.name.endswith(".partial")]
    index = work / "app.bundle.tar.parts.json"
    single = cli_verify(run_cli, made, work / "app.bundle.tar", "--extract", str(work / "single"))
    assert single.returncode == 0, single.stderr
    res = cli_verify(run_cli, made, index, "--extract", str(work / "joined"))
    assert res.returncode == 0, res.stderr
    assert f"parts: {len(doc['parts'])} parts of app.bundle.tar" in res.stdout
    assert f"index signed by vendor key {made['vendor'].fingerprint}" in res.stdout
    files = {p.relative_to(work / "single") for p in (work / "single").rglob("*") if p.is_file()}
    assert files == {p.relative_to(work / "joined") for p in (work / "joined").rglob("*") if p.is_file()}
    for rel in files:
        if rel.name != "verification.json":  # the record names the path it was verified from
            assert (work / "single" / rel).read_bytes() == (work / "joined" / rel).read_bytes(), rel
    record = json.loads((work / "joined/.airgap-bundle/verification.json").read_text())
    assert record["bundle"]["sha256"] == sha(made["built"].path.read_bytes())
    res = cli_verify(run_cli, made, index, "--json")
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["bundleSha256"] == sha(made["built"].path.read_bytes())
    assert doc["parts"]["verified"] and doc["parts"]["signature"]["authority"] == "vendor"
    text = run_cli("split", str(work / "app.bundle.tar"), "--max-part-size", "4KiB", "--key",
                   str(tmp / "pki/vendor.key"), "--output-dir", str(work / "single"))
    assert text.returncode == 0 and "wrote " in text.stdout and "signed by vendor with SHA256:" in text.stdout


def test_library_verify_reads_the_set_in_place(made: dict[str, Any]) -> None:
    index = made["set"] / "app.bundle.tar.parts.json"
    with parts.open_bundle(index, made["trust"], NOW) as source:
        assert isinstance(source, parts.PartsFile)
        result = verify.require(verify.verify(source, made["trust"], now=NOW))
    assert result.bundle_sha256 == sha(made["built"].path.read_bytes())
    with parts.open_bundle(made["built"].path, made["trust"], NOW) as single:
        assert not isinstance(single, parts.PartsFile)
        assert verify.verify(single, made["trust"], now=NOW)


def test_parts_file_reads_like_one_file(made: dict[str, Any]) -> None:
    data = made["built"].path.read_bytes()
    with parts.open_set(made["set"] / "app.bundle.tar.parts.json", None, NOW) as f:
        assert f.pread(3000, PART - 10) == data[PART - 10: PART + 2990]  # across three parts
        assert f.pread(100, len(data) - 10) == data[-10:] and f.pread(5, len(data) + 7) == b""
        assert f.seek(-5, os.SEEK_END) == len(data) - 5 and f.read() == data[-5:]
        f.seek(PART - 1)
        assert f.seek(2, os.SEEK_CUR) == PART + 1 and f.tell() == PART + 1
        assert f.read(PART) == data[PART + 1: 2 * PART + 1]
        with pytest.raises(OSError, match="negative"):
            f.seek(-1)
        assert f.readable() and f.seekable() and f.checked.signer is None


def test_split_refuses_too_many_parts_and_a_file_that_is_not_a_bundle(made: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="more than 9999"):
        parts.split(made["built"].path, 1, made["vendor"], out_dir=tmp_path)
    other = tmp_path / "notes.tar"
    other.write_bytes(b"\0" * 10240)
    with pytest.raises(VerificationError, match="no bundle.intoto.json"):
        parts.split(other, PART, made["vendor"], out_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tar"]


def test_split_leaves_nothing_when_it_cannot_write(made: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="cannot write the parts"):
        parts.split(made["built"].path, PART, made["vendor"], out_dir=tmp_path / "gone")
    # a file that changes size while it is split: the parts are never renamed into place
    with open_file(made["built"].path) as f:
        size = os.fstat(f.fileno()).st_size
        for claimed, message in ((size - 512, "grew while being split"), (size + 512, "shorter than")):
            temps: list[Path] = []
            with pytest.raises(ArchiveError, match=message):
                parts._write_parts(f, made["built"].path, claimed, PART, tmp_path, temps)
            for t in temps:
                t.unlink(missing_ok=True)


# --- refusals: the index first, then sizes, then hashes -------------------------------------------


def test_missing_part_is_named_before_any_hashing(made: dict[str, Any], run_cli: Any, tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    n = len(made["done"].index.parts)
    (tmp_path / "set/app.bundle.tar.part-0003").unlink()
    (tmp_path / "set/app.bundle.tar.part-0002").write_bytes(b"x" * PART)  # damaged too, but 3 is missing
    res = cli_verify(run_cli, made, index, "--extract", str(tmp_path / "out"))
    assert res.returncode == 31, res.stderr
    assert f"{index}: part 3 of {n} (app.bundle.tar.part-0003) is missing" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_short_and_long_parts_are_named_by_size(made: dict[str, Any], run_cli: Any, tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    n = len(made["done"].index.parts)
    part = tmp_path / "set/app.bundle.tar.part-0004"
    part.write_bytes(part.read_bytes()[:-1])
    (tmp_path / "set/app.bundle.tar.part-0002").write_bytes(b"x" * PART)  # damaged, but sizes are checked first
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 31, res.stderr
    assert f"part 4 of {n} (app.bundle.tar.part-0004) is short: 999 bytes, the index says 1,000" in res.stderr
    part.write_bytes(b"\0" * (PART + 1))
    with pytest.raises(PartError, match=f"part 4 of {n} .* is too long: 1,001 bytes"):
        with parts.open_bundle(index, made["trust"], NOW):
            pass  # pragma: no cover - the sizes are checked before the block


def test_damaged_part_is_named_with_both_digests(made: dict[str, Any], run_cli: Any, tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    n = len(made["done"].index.parts)
    for number in (2, n - 1, 1):  # in a blob, near the end, and in the statement
        part = tmp_path / f"set/app.bundle.tar.part-{number:04d}"
        original = part.read_bytes()
        part.write_bytes(original[:500] + bytes([original[500] ^ 1]) + original[501:])
        res = cli_verify(run_cli, made, index, "--extract", str(tmp_path / "out"))
        assert res.returncode == 31, res.stderr
        want = made["done"].index.parts[number - 1].sha256
        assert (f"part {number} of {n} (app.bundle.tar.part-{number:04d}) is damaged: sha256 "
                f"{sha(part.read_bytes())}, index says {want}") in res.stderr
        assert not (tmp_path / "out").exists()
        part.write_bytes(original)


def test_swapped_part_files_are_named(made: dict[str, Any], run_cli: Any, tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    a, b = tmp_path / "set/app.bundle.tar.part-0005", tmp_path / "set/app.bundle.tar.part-0006"
    a.rename(tmp_path / "t")
    b.rename(a)
    (tmp_path / "t").rename(b)
    res = run_cli("inspect", str(index), "--policy", str(made["policy"]))
    assert res.returncode == 31 and "part 5 of" in res.stderr and "is damaged" in res.stderr, res.stderr


def test_reordered_index_is_refused(made: dict[str, Any], run_cli: Any, tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    good = made["done"].index
    swapped = (good.parts[1], good.parts[0], *good.parts[2:])
    # not re-signed: the signature no longer verifies
    envelope = json.loads(index.read_bytes())
    doc = json.loads(good.to_bytes())
    doc["parts"][0], doc["parts"][1] = doc["parts"][1], doc["parts"][0]
    envelope["dsseEnvelope"]["payload"] = base64.b64encode(canonical_json(doc)).decode()
    index.write_text(json.dumps(envelope))
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 24 and f"{index}: the signature does not verify" in res.stderr, res.stderr
    # re-signed by the vendor: a signed index must still list its parts in order
    resign(index, replace(good, parts=swapped), made["vendor"])
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 31, res.stderr
    assert (f"{index}: the parts index is malformed: parts[0] is app.bundle.tar.part-0002, expected "
            "app.bundle.tar.part-0001") in res.stderr


def test_tampered_index_is_refused_before_any_part_is_read(made: dict[str, Any], run_cli: Any,
                                                           tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    envelope = json.loads(index.read_bytes())
    payload = base64.b64decode(envelope["dsseEnvelope"]["payload"])
    tampered = payload.replace(made["done"].index.parts[2].sha256.encode(), b"0" * 64)
    assert tampered != payload
    envelope["dsseEnvelope"]["payload"] = base64.b64encode(tampered).decode()
    index.write_text(json.dumps(envelope))
    for p in (tmp_path / "set").glob("*.part-*"):
        p.unlink()  # had any part been opened first, the error would name a missing part
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 24 and f"{index}: the signature does not verify" in res.stderr, res.stderr


def test_index_signed_by_an_unconfigured_key_or_authority(made: dict[str, Any], run_cli: Any, tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    stranger, _ = made["pki"].signer("stranger")
    resign(index, made["done"].index, stranger)
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 25, res.stderr
    assert f"{index}: signed by key" in res.stderr and "which the policy does not trust for vendor" in res.stderr
    # the customer is configured but not required: a co-signer the policy does not require cannot vouch for parts
    resign(index, replace(made["done"].index, authority="customer"), made["customer"], "customer")
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 22, res.stderr
    assert f"{index}: the parts index is signed as 'customer', which the policy does not require" in res.stderr
    resign(index, replace(made["done"].index, authority="integrator"), made["customer"], "integrator")
    res = cli_verify(run_cli, made, index)
    assert res.returncode == 22 and "which the policy does not name" in res.stderr, res.stderr


def test_required_co_signer_may_sign_the_index(made: dict[str, Any], tmp_path: Path) -> None:
    w = make_world(tmp_path, customer={"required": True})
    built = build_bundle(tmp_path / "app.bundle.tar", {"vendor": w["vendor"], "customer": w["customer"]})
    done = parts.split(built.path, 4096, w["customer"], "customer")
    with parts.open_bundle(done.index_path, w["trust"], NOW) as source:
        assert verify.verify(source, w["trust"], now=NOW)
        assert isinstance(source, parts.PartsFile) and source.checked.signer.authority == "customer"


def test_not_an_index_and_malformed_signed_indexes(made: dict[str, Any], tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    good = made["done"].index
    index.write_text('{"hello": "world"}')
    with pytest.raises(BadSignatureError, match="not a signed parts index"):
        parts.read_index(index, made["trust"], NOW)
    index.write_text("{" + " " * parts.MAX_INDEX_BYTES)
    with pytest.raises(InputError, match="the parts index larger than"):
        parts.read_index(index, made["trust"], NOW)
    with pytest.raises(InputError, match="cannot read the parts index"):
        parts.read_index(tmp_path / "nothing.parts.json", made["trust"], NOW)
    assert not parts.is_index(tmp_path / "nothing.parts.json")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"{" + bytes(range(256)) * 16)  # not JSON: read as a (broken) bundle, not an index
    assert not parts.is_index(garbage) and parts.is_index(made["set"] / "app.bundle.tar.parts.json")
    with pytest.raises(ArchiveError, match="not a readable tar"):
        with parts.open_bundle(garbage, made["trust"], NOW) as source:
            verify.require(verify.verify(source, made["trust"], now=NOW))
    doc = json.loads(good.to_bytes())
    cases: list[tuple[Any, str]] = [
        (b"[1,", "not JSON"),
        (b'{"b":1, "a":2}', "canonical"),
        ({**doc, "kind": "Other"}, "not {apiVersion"),
        ({**doc, "bundle": {**doc["bundle"], "name": "../x"}}, "bundle is not"),
        ({**doc, "parts": []}, "parts is not a list"),
        ({**doc, "parts": [{**doc["parts"][0], "size": True}, *doc["parts"][1:]]}, r"parts\[0\] is not"),
        ({**doc, "parts": doc["parts"][:-1]}, "the parts add up to"),
        ({**doc, "authority": 7}, "authority is not a string"),
    ]
    for payload, message in cases:
        data = payload if isinstance(payload, bytes) else canonical_json(payload)
        with pytest.raises(PartError, match=message):
            parts.PartsIndex.from_bytes(data, str(index))
    # signed, well-formed, but for another bundle: the statement it names is not the parts' first member
    resign(index, replace(good, statement_sha256="e" * 64), made["vendor"])
    with pytest.raises(PartError, match="do not begin with the statement the index names"):
        with parts.open_bundle(index, made["trust"], NOW):
            pass  # pragma: no cover - refused on opening


def test_a_part_that_changes_after_opening_is_named(made: dict[str, Any], tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    n = len(made["done"].index.parts)
    last = tmp_path / f"set/app.bundle.tar.part-{n - 2:04d}"
    original = last.read_bytes()
    with pytest.raises(PartError, match=f"part {n - 2} of {n} .* is short: 10 bytes"):
        with parts.open_bundle(index, made["trust"], NOW) as source:
            os.truncate(last, 10)
            verify.require(verify.verify(source, made["trust"], now=NOW))
    last.write_bytes(original)
    with parts.open_set(index, None, NOW) as f, pytest.raises(ArchiveError, match="ended early"):
        os.truncate(last, 0)
        f.pread(10, made["done"].index.parts[n - 3].offset)
    with pytest.raises(PartError):  # unrelated failures in the block are re-raised when every part is intact
        with parts.open_bundle(made["set"] / "app.bundle.tar.parts.json", made["trust"], NOW):
            raise PartError("from the block")
    with pytest.raises(ArchiveError, match="not a part"):
        with parts.open_bundle(made["set"] / "app.bundle.tar.parts.json", made["trust"], NOW):
            raise ArchiveError("not a part")


def test_inspect_a_set_with_and_without_policy(made: dict[str, Any], run_cli: Any) -> None:
    index = made["set"] / "app.bundle.tar.parts.json"
    res = run_cli("inspect", str(index))
    assert res.returncode == 0, res.stderr
    assert "index signature NOT verified (no policy)" in res.stdout and "UNVERIFIED" in res.stdout
    res = run_cli("inspect", str(index), "--policy", str(made["policy"]), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    jsonschema.Draft202012Validator(json.loads((REPO / "schemas/inspection.schema.json").read_text())).validate(doc)
    assert doc["bundle"]["statementSha256"] == doc["parts"]["statementSha256"] == sha(made["built"].statement)
    assert doc["parts"]["verified"] and len(doc["parts"]["parts"]) == len(made["done"].index.parts)
    assert doc["bundle"]["size"] == made["built"].path.stat().st_size


def test_part_and_index_names() -> None:
    assert parts.part_name("a.tar", 1) == "a.tar.part-0001" and parts.part_name("a.tar", 9999) == "a.tar.part-9999"
    assert parts.index_path(Path("/x/a.tar")) == Path("/x/a.tar.parts.json")


def test_split_that_cannot_rename_leaves_no_temporary_file(made: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "app.bundle.tar.part-0002").mkdir()  # in the way of the second part's rename
    with pytest.raises(ArchiveError, match="cannot write the parts"):
        parts.split(made["built"].path, PART, made["vendor"], out_dir=tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert not (tmp_path / "app.bundle.tar.parts.json").exists()  # no index names a half-renamed set


def test_unreadable_part_and_a_set_that_is_no_bundle(made: dict[str, Any], tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    loop = tmp_path / "set/app.bundle.tar.part-0002"
    loop.unlink()
    os.symlink(loop.name, loop)  # a link to itself: it exists, and cannot be opened
    with pytest.raises(InputError, match="cannot open part 2 of"):
        with parts.open_bundle(index, made["trust"], NOW):
            pass  # pragma: no cover - refused on opening
    # a correctly signed index over a tar whose first member is not a statement
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("readme.txt")
        info.size = 3000
        tf.addfile(info, io.BytesIO(b"x" * 3000))
    data = plain.read_bytes()
    shutil.copy(plain, tmp_path / "plain.tar.part-0001")
    index = parts.PartsIndex("vendor", "plain.tar", len(data), sha(data), "e" * 64,
                             (parts.Part("plain.tar.part-0001", len(data), sha(data), 0),))
    resign(tmp_path / "plain.tar.parts.json", index, made["vendor"])
    with pytest.raises(PartError, match="do not begin with the statement the index names"):
        with parts.open_bundle(tmp_path / "plain.tar.parts.json", made["trust"], NOW):
            pass  # pragma: no cover - refused on opening


# --- join ----------------------------------------------------------------------------------------

def test_cli_join_writes_the_bundle_that_was_split_beside_the_index(made: dict[str, Any], run_cli: Any,
                                                                    tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    res = run_cli("join", str(index), "--policy", str(made["policy"]))
    assert res.returncode == 0, res.stderr
    joined = tmp_path / "set" / "app.bundle.tar"  # the name the signed index gives the bundle
    assert joined.read_bytes() == made["built"].path.read_bytes()
    assert res.stdout.startswith(f"joined {len(made['done'].index.parts)} part(s) of {index} into {joined} (")
    assert cli_verify(run_cli, made, joined).returncode == 0
    again = run_cli("join", str(index), "--policy", str(made["policy"]), "--output", str(joined))
    assert again.returncode == 2 and f"{joined} already exists" in again.stderr


def test_join_refuses_a_damaged_or_missing_part_and_leaves_nothing(made: dict[str, Any], run_cli: Any,
                                                                   tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    n = len(made["done"].index.parts)
    part = tmp_path / "set/app.bundle.tar.part-0002"
    original = part.read_bytes()
    part.write_bytes(original[:10] + bytes([original[10] ^ 1]) + original[11:])  # same size, other bytes
    out = tmp_path / "joined.tar"
    with pytest.raises(PartError, match=rf"part 2 of {n} \(app.bundle.tar.part-0002\) is damaged: sha256 "):
        parts.join(index, made["trust"], NOW, out)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".joined.tar")]
    part.unlink()
    res = run_cli("join", str(index), "--policy", str(made["policy"]), "--output", str(out))
    assert res.returncode == 31 and f"part 2 of {n} (app.bundle.tar.part-0002) is missing" in res.stderr
    assert not out.exists()


def test_join_into_a_folder_that_does_not_exist_is_one_line(made: dict[str, Any], run_cli: Any,
                                                            tmp_path: Path) -> None:
    # The temporary file is made before anything is written: its failure was a traceback (FileNotFoundError).
    out = tmp_path / "missing" / "joined.tar"
    res = run_cli("join", str(made["set"] / "app.bundle.tar.parts.json"), "--policy", str(made["policy"]),
                  "--output", str(out))
    assert (res.returncode, res.stderr) == (11, f"airgap-bundle: error: {out}: cannot join the parts: "
                                                "No such file or directory\n")
    assert [p.name for p in tmp_path.iterdir()] == []


def test_join_checks_the_index_signature_against_the_policy_first(made: dict[str, Any], tmp_path: Path) -> None:
    index = copy_set(made, tmp_path / "set")
    resign(index, replace(made["done"].index, authority="customer"), made["customer"], "customer")
    with pytest.raises(VerificationError, match="signed as 'customer', which the policy does not require") as info:
        parts.join(index, made["trust"], NOW, tmp_path / "joined.tar")
    assert info.value.exit_code == 22 and not (tmp_path / "joined.tar").exists()


def test_split_and_join_hand_every_8_mib_to_write_back_as_they_go(made: dict[str, Any], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.bundles import small_payload
    from tests.support.writeback import record_writeback

    payload = small_payload()
    payload["charts/demo-1.0.0.tgz"] = os.urandom(20 << 20)  # a big member: the bundle is a little over 20 MiB
    built = build_bundle(tmp_path / "big.bundle.tar", {"vendor": made["vendor"]}, files=payload)
    (tmp_path / "set").mkdir()
    step = 8 << 20
    advice = record_writeback(monkeypatch)
    done = parts.split(built.path, 12 << 20, made["vendor"], out_dir=tmp_path / "set")
    # each part (12 MiB, then the rest, a little over 8 MiB) from its own start: one advice after 8 MiB
    assert [p.size >= step for p in done.index.parts] == [True, True] and advice == [(0, step), (0, step)]
    advice.clear()
    parts.join(done.index_path, made["trust"], NOW, tmp_path / "joined.tar")
    assert (tmp_path / "joined.tar").read_bytes() == built.path.read_bytes()
    assert advice == [(0, step), (step, step)]  # 1 MiB reads: after 8 and 16 MiB, the rest left to the fsync
