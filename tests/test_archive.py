"""The bundle tar: deterministic bytes, normalised headers, header-only scan, co-sign append, safe extract."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundler import archive
from bundler.bundlefile import open_file
from bundler.errors import ArchiveError, InputError, UnlistedMemberError, UnsafeArchiveError
from tests.support.bundles import EPOCH, sha

LONG = "images/blobs/sha256/" + "a" * 64 + "/" + "n" * 60  # > 100 bytes: needs a pax header
MIB = 1 << 20  # the documented chunk size ("data moves in 1 MiB chunks")
RECORD = 10240  # tar(1)'s record: 20 blocks of 512 bytes

# No warning either: a buffered/unbuffered mix-up in open() shows up as a RuntimeWarning on the user's terminal.
pytestmark = pytest.mark.filterwarnings("error")


def _members(root: Path) -> list[tuple[str, archive.Source]]:
    (root / "src").mkdir(exist_ok=True)
    big = root / "src" / "layer.bin"
    big.write_bytes(os.urandom(3 * archive.CHUNK + 17))
    small = root / "src" / "values.yaml"
    small.write_text("image: demo\n")
    return [
        ("signatures/vendor.sigstore.json", b'{"sig":1}'),
        ("manifests/values.yaml", small),
        (archive.STATEMENT, b'{"statement":true}'),
        ("images/blobs/sha256/layer", big),
        (LONG, b"long"),
        ("charts/demo.tgz", b"chart"),
    ]


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    members = _members(tmp_path)
    archive.write(members, tmp_path / "a.tar", EPOCH)
    os.utime(tmp_path / "src" / "values.yaml", (1, 1))  # source mtimes do not leak into the archive
    archive.write(list(reversed(members)), tmp_path / "b.tar", EPOCH)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert (tmp_path / "a.tar").stat().st_size % archive.RECORD == 0
    archive.write(members, tmp_path / "c.tar", EPOCH + 1)
    assert (tmp_path / "c.tar").read_bytes() != (tmp_path / "a.tar").read_bytes()


def test_order_and_normalised_headers(tmp_path: Path) -> None:
    archive.write(_members(tmp_path), tmp_path / "a.tar", EPOCH)
    with tarfile.open(tmp_path / "a.tar") as tf:
        infos = tf.getmembers()
        assert [i.name for i in infos] == [archive.STATEMENT, "charts/demo.tgz", LONG, "images/blobs/sha256/layer",
                                           "manifests/values.yaml", "signatures/vendor.sigstore.json"]
        for info in infos:
            assert (info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime) == (0o644, 0, 0, "", "", EPOCH)
            assert info.isreg()
            assert set(info.pax_headers) <= {"path"}  # no pax timestamps; a pax path only for the long name
        assert tf.extractfile(LONG).read() == b"long"
        assert tf.extractfile("images/blobs/sha256/layer").read() == (tmp_path / "src" / "layer.bin").read_bytes()
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "a.tar")], capture_output=True, text=True, check=True)
    assert LONG in listing.stdout and "0/0" in listing.stdout  # GNU tar reads it


def test_index_matches_the_headers_without_reading_data(tmp_path: Path) -> None:
    members = _members(tmp_path)
    archive.write(members, tmp_path / "a.tar", EPOCH)
    index = archive.read_index(tmp_path / "a.tar")
    data = (tmp_path / "a.tar").read_bytes()
    for m in index.members:
        source = dict(members)[m.name]
        expected = source if isinstance(source, bytes) else Path(source).read_bytes()
        assert data[m.data_offset : m.data_offset + m.size] == expected
    assert list(index.signatures) == ["vendor"]
    assert archive.STATEMENT not in [m.name for m in index.payload]
    assert data[index.end :] == b"\0" * (len(data) - index.end)


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "a.tar"
    out.write_bytes(b"previous bundle")
    with pytest.raises(ArchiveError):
        archive.write([(archive.STATEMENT, b"{}"), ("x", tmp_path / "missing")], out, EPOCH)
    with pytest.raises(ArchiveError):
        archive.write([("x", b"no statement")], out, EPOCH)
    with pytest.raises(UnsafeArchiveError):
        archive.write([(archive.STATEMENT, b"{}"), ("../x", b"")], out, EPOCH)
    with pytest.raises(UnsafeArchiveError):
        archive.write([(archive.STATEMENT, b"{}"), ("a", b""), ("A", b"")], out, EPOCH)
    assert out.read_bytes() == b"previous bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def test_trailing_data_after_the_end_marker_is_refused(tmp_path: Path) -> None:
    archive.write([(archive.STATEMENT, b"{}")], tmp_path / "a.tar", EPOCH)
    hidden = io.BytesIO()
    with tarfile.open(fileobj=hidden, mode="w") as tf:
        info = tarfile.TarInfo("hidden")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    with open(tmp_path / "a.tar", "ab") as f:
        f.write(hidden.getvalue())
    with pytest.raises(UnsafeArchiveError, match="after the end-of-archive"):
        archive.read_index(tmp_path / "a.tar")


def test_not_a_tar_and_truncated(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"hello" * 200)
    with pytest.raises(ArchiveError):
        archive.read_index(tmp_path / "x")
    archive.write([(archive.STATEMENT, b"{}"), ("big", os.urandom(5000))], tmp_path / "a.tar", EPOCH)
    data = (tmp_path / "a.tar").read_bytes()
    (tmp_path / "t.tar").write_bytes(data[:3000])
    with pytest.raises(ArchiveError, match="truncated"):
        archive.read_index(tmp_path / "t.tar")


def test_append_signature_keeps_every_earlier_byte(tmp_path: Path) -> None:
    members = _members(tmp_path)
    path = tmp_path / "a.tar"
    archive.write(members, path, EPOCH)
    before = path.read_bytes()
    end = archive.read_index(path).end
    archive.append_signature(path, "customer", b'{"customer":1}')
    after = path.read_bytes()
    assert after[:end] == before[:end]
    assert len(after) % archive.RECORD == 0
    index = archive.read_index(path)
    assert [m.name for m in index.members][-1] == "signatures/customer.sigstore.json"
    assert sorted(index.signatures) == ["customer", "vendor"]
    with tarfile.open(path) as tf:
        info = tf.getmember("signatures/customer.sigstore.json")
        assert (info.mtime, info.mode) == (EPOCH, 0o644)
        assert tf.extractfile(info).read() == b'{"customer":1}'
    # Appending a signature that sorts last gives the bytes a one-shot write would have produced.
    archive.write([*members, ("signatures/witness.sigstore.json", b"{}")], tmp_path / "b.tar", EPOCH)
    archive.write(members, tmp_path / "c.tar", EPOCH)
    archive.append_signature(tmp_path / "c.tar", "witness", b"{}")
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "c.tar").read_bytes()


def test_second_signature_by_an_authority_needs_replace(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    archive.write(_members(tmp_path), path, EPOCH)
    payload_end = archive.read_index(path).get("signatures/vendor.sigstore.json").offset
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match="already signed"):
        archive.append_signature(path, "vendor", b"{}")
    assert path.read_bytes() == before
    archive.append_signature(path, "vendor", b'{"renewed":1}', replace=True)
    after = path.read_bytes()
    assert after[:payload_end] == before[:payload_end]
    with tarfile.open(path) as tf:
        assert tf.extractfile("signatures/vendor.sigstore.json").read() == b'{"renewed":1}'
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".")]) == 0
    with pytest.raises(InputError, match="invalid authority name"):
        archive.append_signature(path, "Not Valid", b"{}")


def _expected(members: list[tuple[str, archive.Source]]) -> dict[str, tuple[int, str]]:
    out = {}
    for name, src in members:
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        out[name] = (len(data), sha(data))
    return out


def test_extract_writes_everything_or_nothing(tmp_path: Path) -> None:
    members = _members(tmp_path)
    path = tmp_path / "a.tar"
    archive.write(members, path, EPOCH)
    expected = _expected(members)
    archive.extract(path, tmp_path / "out", expected)
    for name, (size, digest) in expected.items():
        data = (tmp_path / "out" / name).read_bytes()
        assert (len(data), sha(data)) == (size, digest)
    with pytest.raises(ArchiveError, match="already exists"):
        archive.extract(path, tmp_path / "out", expected)
    wrong = {**expected, "charts/demo.tgz": (5, "0" * 64)}
    with pytest.raises(UnlistedMemberError):
        archive.extract(path, tmp_path / "out2", wrong)
    fewer = {k: v for k, v in expected.items() if k != "charts/demo.tgz"}
    with pytest.raises(UnlistedMemberError):
        archive.extract(path, tmp_path / "out3", fewer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "out", "src"]


# --- each refusal with its exact reason (mutation testing, docs/testing.md) -----------------------------------

@pytest.mark.parametrize(("name", "bad"), [
    ("", "an empty name"),
    ("a/" + "n" * 4095, "a name longer than 4096 bytes"),
    ("/etc/passwd", "an absolute path"),
    ("a\\b", "a backslash or control character"),
    ("a\x1fb", "a backslash or control character"),
    ("a\x7fb", "a backslash or control character"),
    ("a/../b", "a '..', '.' or empty path component"),
    ("..", "a '..', '.' or empty path component"),
    ("a//b", "an empty or '.' component"),
    ("./a", "an empty or '.' component"),
    ("a/", "an empty or '.' component"),
])
def test_unsafe_member_names_are_refused_with_the_reason(name: str, bad: str) -> None:
    with pytest.raises(UnsafeArchiveError) as err:
        archive.check_name(name, where="b.tar")
    assert err.value.message == f"b.tar: member {name!r} has {bad}"
    assert err.value.hint == "bundle members are plain relative paths; this file was not made by airgap-bundle"


def test_safe_member_names_pass() -> None:
    for name in ("a", "a/b.c", "n" * 4096, "a/..b/c..", "é/ü", "a b"):
        assert archive.check_name(name) == name


def test_signature_names_follow_the_authority_rule() -> None:
    for authority in ("a", "vendor", "integrator-acme", "x" * 63, "a1"):
        assert archive.signature_name(authority) == f"signatures/{authority}.sigstore.json"
    for authority in ("", "x" * 64, "-a", "a-", "A", "a_b", "a.b"):
        with pytest.raises(InputError, match="invalid authority name"):
            archive.signature_name(authority)


def test_write_refuses_a_file_under_a_file_and_odd_signature_members(tmp_path: Path) -> None:
    out = tmp_path / "a.tar"
    for names, message in ((["a", "a/b"], "member 'a/b' lies under the file 'a'"),
                           (["x/y", "x/y/z/w"], "member 'x/y/z/w' lies under the file 'x/y'")):
        with pytest.raises(UnsafeArchiveError) as err:
            archive.write([(archive.STATEMENT, b"{}"), *((n, b"") for n in names)], out, EPOCH)
        assert err.value.message == f"{out}: {message}"
    archive.write([(archive.STATEMENT, b"{}"), ("x/y", b""), ("x/yz", b""), ("x/z/y", b"")], out, EPOCH)
    with pytest.raises(ArchiveError) as err:
        archive.write([(archive.STATEMENT, b"{}"), ("signatures/Vendor.sigstore.json", b"")], out, EPOCH)
    assert err.value.message == f"{out}: signatures/Vendor.sigstore.json is not signatures/<authority>.sigstore.json"
    with pytest.raises(ArchiveError, match=r"^/dev/null: not a regular file \(bundle members"):
        archive.write([(archive.STATEMENT, b"{}"), ("d", Path("/dev/null"))], out, EPOCH)
    with pytest.raises(UnsafeArchiveError, match="duplicate member 'x'"):
        archive.write([(archive.STATEMENT, b"{}"), ("x", b""), ("x", b"")], out, EPOCH)


@pytest.mark.parametrize(("size", "blocks"), [(0, 0), (1, 1), (511, 1), (512, 1), (513, 2), (2048, 4)])
def test_member_data_is_padded_to_whole_blocks(tmp_path: Path, size: int, blocks: int) -> None:
    archive.write([(archive.STATEMENT, b"s" * size), ("z", b"z")], tmp_path / "a.tar", EPOCH)
    index = archive.read_index(tmp_path / "a.tar")
    statement, z = index.members
    assert (statement.offset, statement.data_offset, statement.size) == (0, 512, size)
    assert statement.end == 512 + blocks * 512 == z.offset
    assert index.end == z.end == z.data_offset + 512
    assert index.file_size == (tmp_path / "a.tar").stat().st_size == RECORD


def test_the_end_marker_fills_the_last_record(tmp_path: Path) -> None:
    # 2 zero blocks after the last member, then zeros to a multiple of 10240 bytes.
    for data, size in ((b"x" * (RECORD - 3 * 512), RECORD), (b"x" * (RECORD - 3 * 512 + 1), 2 * RECORD)):
        archive.write([(archive.STATEMENT, data)], tmp_path / "a.tar", EPOCH)
        raw = (tmp_path / "a.tar").read_bytes()
        assert len(raw) == size
        end = archive.read_index(tmp_path / "a.tar").end
        assert end == 512 + -(-len(data) // 512) * 512 and len(raw) - end >= 2 * 512
        assert raw[end:] == bytes(len(raw) - end)
    # GNU tar writes the same end: the same member through tar(1) gives a file of the same size.
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / archive.STATEMENT).write_bytes(b"x" * 100)
    subprocess.run(["tar", "-cf", str(tmp_path / "gnu.tar"), "-C", str(tmp_path / "src"), archive.STATEMENT], check=True)
    archive.write([(archive.STATEMENT, b"x" * 100)], tmp_path / "a.tar", EPOCH)
    assert (tmp_path / "a.tar").stat().st_size == (tmp_path / "gnu.tar").stat().st_size == RECORD


def test_index_lookups(tmp_path: Path) -> None:
    archive.write([(archive.STATEMENT, b"{}"), ("signatures/v.sigstore.json", b"1"), ("z", b"")],
                  tmp_path / "a.tar", EPOCH)
    index = archive.read_index(tmp_path / "a.tar")
    assert index.get("z") is index.members[1] and index.get("nope") is None
    assert [m.name for m in index.payload] == ["z"] and list(index.signatures) == ["v"]


def _tar(tmp_path: Path, *infos: tuple[tarfile.TarInfo, bytes]) -> Path:
    out = tmp_path / "t.tar"
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tf:
        for info, data in infos:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out


def _typed(name: str, kind: bytes, **kw: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info, b""


@pytest.mark.parametrize(("entry", "kind"), [
    (_typed("l", tarfile.SYMTYPE, linkname="/etc/passwd"), "a symbolic link"),
    (_typed("h", tarfile.LNKTYPE, linkname=archive.STATEMENT), "a hard link"),
    (_typed("c", tarfile.CHRTYPE), "a device file"),
    (_typed("b", tarfile.BLKTYPE), "a device file"),
    (_typed("f", tarfile.FIFOTYPE), "a fifo"),
    (_typed("k", tarfile.CONTTYPE), "a member of type b'7'"),
])
def test_special_members_are_refused_by_kind(tmp_path: Path, entry: tuple[tarfile.TarInfo, bytes], kind: str) -> None:
    path = _tar(tmp_path, (tarfile.TarInfo(archive.STATEMENT), b"{}"), entry)
    with pytest.raises(UnsafeArchiveError) as err:
        archive.read_index(path)
    assert err.value.message == f"{path}: {entry[0].name!r} is {kind}"


def test_directory_entries_are_skipped(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("manifests/")
    folder.type = tarfile.DIRTYPE
    path = _tar(tmp_path, (tarfile.TarInfo(archive.STATEMENT), b"{}"), (folder, b""),
                (tarfile.TarInfo("manifests/a.yaml"), b"a: 1\n"))
    assert [m.name for m in archive.read_index(path).members] == [archive.STATEMENT, "manifests/a.yaml"]
    only = _tar(tmp_path, (tarfile.TarInfo(archive.STATEMENT), b"{}"), (folder, b""))
    index = archive.read_index(only)
    assert [m.name for m in index.members] == [archive.STATEMENT] and index.end == 3 * 512
    bad = tarfile.TarInfo("../up/")
    bad.type = tarfile.DIRTYPE
    with pytest.raises(UnsafeArchiveError, match="'..'"):
        archive.read_index(_tar(tmp_path, (bad, b"")))


def test_reading_members_caps_and_chunks(tmp_path: Path) -> None:
    big = os.urandom(2 * MIB + 5)
    archive.write([(archive.STATEMENT, b"{}"), ("big", big), ("empty", b""), ("one", b"1")], tmp_path / "a.tar", EPOCH)
    index = archive.read_index(tmp_path / "a.tar")
    with open(tmp_path / "a.tar", "rb") as f:
        chunks = [bytes(c) for c in archive.iter_member(f, index.get("big"))]
        assert [len(c) for c in chunks] == [MIB, MIB, 5] and b"".join(chunks) == big
        assert list(archive.iter_member(f, index.get("empty"))) == []
        assert [bytes(c) for c in archive.iter_member(f, index.get("one"))] == [b"1"]
        assert archive.read_member(f, index.get("big"), cap=len(big)) == big
        with pytest.raises(ArchiveError) as err:
            archive.read_member(f, index.get("big"), cap=len(big) - 1)
        assert err.value.message == f"big: {len(big)} bytes, more than the {len(big) - 1} allowed"
    cut = tmp_path / "cut.tar"
    cut.write_bytes((tmp_path / "a.tar").read_bytes()[: index.get("big").data_offset + 100])
    with open(cut, "rb") as f:
        with pytest.raises(ArchiveError, match="^big: unexpected end of file$"):
            archive.read_member(f, index.get("big"), cap=len(big))
        with pytest.raises(ArchiveError, match="^big: unexpected end of file$"):
            list(archive.iter_member(f, index.get("big")))


def test_read_statement_needs_a_statement_and_caps_it(tmp_path: Path) -> None:
    archive.write([(archive.STATEMENT, b"{12345}")], tmp_path / "a.tar", EPOCH)
    assert archive.read_statement(tmp_path / "a.tar") == b"{12345}"
    with pytest.raises(ArchiveError, match="more than the 6 allowed"):
        archive.read_statement(tmp_path / "a.tar", cap=6)
    path = _tar(tmp_path, (tarfile.TarInfo("other"), b"x"))
    with pytest.raises(ArchiveError, match="no bundle.intoto.json: not an airgap bundle"):
        archive.read_statement(path)
    with pytest.raises(ArchiveError, match="no bundle.intoto.json: not a bundle"):
        archive.append_signature(path, "vendor", b"{}")
    with pytest.raises(InputError, match="cannot open the bundle"):
        archive.read_index(tmp_path / "missing.tar")


def test_append_signature_takes_the_statement_mtime_or_the_given_epoch(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    archive.write([(archive.STATEMENT, b"{}"), ("z", b"z")], path, EPOCH)
    archive.append_signature(path, "a", b"1")
    archive.append_signature(path, "b", b"2", epoch=EPOCH + 7)
    with tarfile.open(path) as tf:
        assert [(i.name, i.mtime) for i in tf.getmembers()][-2:] == [
            ("signatures/a.sigstore.json", EPOCH), ("signatures/b.sigstore.json", EPOCH + 7)]
    # replacing one keeps the other signature and every payload byte
    archive.append_signature(path, "a", b"11", replace=True)
    with tarfile.open(path) as tf:
        assert [(i.name, tf.extractfile(i).read()) for i in tf.getmembers()] == [
            (archive.STATEMENT, b"{}"), ("z", b"z"), ("signatures/b.sigstore.json", b"2"),
            ("signatures/a.sigstore.json", b"11")]
    assert path.stat().st_size % archive.RECORD == 0


def test_extract_refuses_an_odd_destination_and_changed_content(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    members = [(archive.STATEMENT, b"{}"), ("d/e/f", b"deep")]
    archive.write(members, path, EPOCH)
    expected = _expected(members)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveError, match="is not a folder$"):
        archive.extract(path, tmp_path / "file" / "out", expected)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ArchiveError, match="already exists"):
        archive.extract(path, tmp_path / "link", expected)
    same_size = {**expected, "d/e/f": (4, "0" * 64)}
    with pytest.raises(UnlistedMemberError) as err:
        archive.extract(path, tmp_path / "out", same_size)
    assert err.value.message == "d/e/f: content changed between verification and extraction"
    shorter = {**expected, "d/e/f": (3, expected["d/e/f"][1])}
    with pytest.raises(UnlistedMemberError, match="content changed"):
        archive.extract(path, tmp_path / "out", shorter)
    with pytest.raises(UnlistedMemberError) as err:
        archive.extract(path, tmp_path / "out", {**expected, "more": (1, "0" * 64)})
    assert err.value.message == f"{tmp_path / 'out'}: archive members differ from the verified list (unexpected: [], missing: ['more'])"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "file", "link"]
    with open(path, "rb") as f:
        archive.extract(f, tmp_path / "out", expected)
    assert (tmp_path / "out" / "d" / "e" / "f").read_bytes() == b"deep"
    modes = {p.relative_to(tmp_path / "out").as_posix(): p.stat().st_mode & 0o777 for p in (tmp_path / "out").rglob("*")}
    assert modes == {archive.STATEMENT: 0o644, "d": 0o755, "d/e": 0o755, "d/e/f": 0o644}
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


# --- pins for mutation testing (docs/testing-mutation.md): each fails when the line it names changes ----------

def test_member_order_is_statement_then_payload_by_name_then_signatures(tmp_path: Path) -> None:
    # Names that sort before the statement's and after "signatures/" must not move it or the signatures.
    names = ["zz/last", "signatures/b.sigstore.json", "sbom.cdx.json", "a", "signatures/a.sigstore.json",
             archive.STATEMENT, "bundle.a", "images/x"]
    archive.write([(n, n.encode()) for n in names], tmp_path / "a.tar", EPOCH)
    assert [m.name for m in archive.read_index(tmp_path / "a.tar").members] == [
        archive.STATEMENT, "a", "bundle.a", "images/x", "sbom.cdx.json", "zz/last",
        "signatures/a.sigstore.json", "signatures/b.sigstore.json"]


def test_index_values_are_immutable(tmp_path: Path) -> None:
    archive.write([(archive.STATEMENT, b"{}")], tmp_path / "a.tar", EPOCH)
    index = archive.read_index(tmp_path / "a.tar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.end = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        index.members[0].size = 0  # type: ignore[misc]


def test_the_written_bundle_is_mode_0644_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        archive.write([(archive.STATEMENT, b"{}"), ("signatures/v.sigstore.json", b"1")], tmp_path / "a.tar", EPOCH)
        assert (tmp_path / "a.tar").stat().st_mode & 0o777 == 0o644
        archive.append_signature(tmp_path / "a.tar", "v", b"2", replace=True)  # rewritten through a temp file
        assert (tmp_path / "a.tar").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_an_empty_tar_has_no_members_and_ends_at_zero() -> None:
    assert archive.read_index(io.BytesIO(bytes(RECORD))) == archive.BundleIndex((), 0, RECORD)


def test_a_member_whose_data_ends_at_the_last_byte_is_complete(tmp_path: Path) -> None:
    # A tar cut right after a member's data (no padding, no end blocks) is short, not truncated inside it.
    archive.write([(archive.STATEMENT, b"s" * 512)], tmp_path / "a.tar", EPOCH)
    (tmp_path / "cut.tar").write_bytes((tmp_path / "a.tar").read_bytes()[:1024])
    index = archive.read_index(tmp_path / "cut.tar")
    assert [(m.name, m.data_offset, m.size) for m in index.members] == [(archive.STATEMENT, 512, 512)]
    assert (index.end, index.file_size) == (1024, 1024)


def test_read_index_names_the_source_and_closes_only_what_it_opened(tmp_path: Path) -> None:
    archive.write([(archive.STATEMENT, b"{}"), ("z", b"z")], tmp_path / "a.tar", EPOCH)
    seen: list[object] = []
    archive.read_index(tmp_path / "a.tar", admit=lambda f, m: seen.append(f))
    assert seen and all(f.closed for f in seen)  # type: ignore[attr-defined]
    with open(tmp_path / "a.tar", "rb") as f:
        assert [m.name for m in archive.read_index(f).members] == [archive.STATEMENT, "z"]
        assert not f.closed
    regular_with_slash = tarfile.TarInfo("x/")  # ustar keeps a regular file's trailing "/"
    with tarfile.open(tmp_path / "b.tar", "w", format=tarfile.USTAR_FORMAT) as tf:
        tf.addfile(regular_with_slash)
    with open(tmp_path / "b.tar", "rb") as f, pytest.raises(UnsafeArchiveError) as err:
        archive.read_index(f)
    assert err.value.message == f"{tmp_path / 'b.tar'}: member 'x/' has an empty or '.' component"
    with pytest.raises(ArchiveError) as err:
        archive.read_index(io.BytesIO(b""))
    assert err.value.message == "bundle: not a readable tar file: empty file"


def test_a_member_cut_inside_its_data_is_truncated(tmp_path: Path) -> None:
    archive.write([(archive.STATEMENT, b"{}"), ("big", b"b" * 5000)], tmp_path / "a.tar", EPOCH)
    (tmp_path / "t.tar").write_bytes((tmp_path / "a.tar").read_bytes()[:3000])
    with pytest.raises(ArchiveError) as err:
        archive.read_index(tmp_path / "t.tar")
    assert (err.value.message, err.value.hint) == (
        f"{tmp_path / 't.tar'}: truncated inside member 'big'", "the file is incomplete; copy it again")


def _ranged(tmp_path: Path) -> tuple[Path, archive.Member, bytes]:
    data = os.urandom(2 * MIB + 700)
    archive.write([(archive.STATEMENT, b"{}"), ("blob", data), ("z", b"after")], tmp_path / "a.tar", EPOCH)
    member = archive.read_index(tmp_path / "a.tar").get("blob")
    assert member is not None
    return tmp_path / "a.tar", member, data


@pytest.mark.parametrize(("start", "length"), [
    (0, 0), (0, 1), (0, 2 * MIB + 700), (1, 2 * MIB + 699), (5, 10), (2 * MIB + 699, 1), (2 * MIB + 700, 0),
    (MIB - 1, MIB + 2)])
def test_read_range_yields_exactly_the_requested_bytes(tmp_path: Path, start: int, length: int) -> None:
    path, member, data = _ranged(tmp_path)
    with open_file(path) as f:
        chunks = list(archive.read_range(f, member, start, length))
    assert b"".join(chunks) == data[start : start + length]
    assert [len(c) for c in chunks] == [MIB] * (length // MIB) + ([length % MIB] if length % MIB else [])


@pytest.mark.parametrize(("start", "length"), [(-1, 1), (0, -1), (-1, 0), (2 * MIB + 700, 1), (2 * MIB + 699, 2),
                                               (0, 2 * MIB + 701), (2 * MIB + 701, 0)])
def test_read_range_refuses_a_range_outside_the_member(tmp_path: Path, start: int, length: int) -> None:
    path, member, _ = _ranged(tmp_path)
    with open_file(path) as f, pytest.raises(ArchiveError) as err:
        next(archive.read_range(f, member, start, length))
    assert err.value.message == f"blob: bytes {start}-{start + length} are outside its {2 * MIB + 700} bytes"


def test_read_range_stops_at_a_file_that_ends_early(tmp_path: Path) -> None:
    path, member, data = _ranged(tmp_path)
    os.truncate(path, member.data_offset + MIB + 10)
    with open_file(path) as f:
        chunks = archive.read_range(f, member, 1, 2 * MIB)
        assert next(chunks) == data[1 : MIB + 1]
        assert next(chunks) == data[MIB + 1 : MIB + 10]
        with pytest.raises(ArchiveError) as err:
            next(chunks)
    assert (err.value.message, err.value.hint) == ("blob: unexpected end of file", "the bundle file was truncated")


def test_digest_all_hashes_the_whole_file_and_each_member_in_one_pass(tmp_path: Path) -> None:
    members = _members(tmp_path)
    path = tmp_path / "a.tar"
    archive.write(members, path, EPOCH)
    archive.append_signature(path, "customer", b"c" * 700)  # a member after the first end blocks were rewritten
    index = archive.read_index(path)
    raw = path.read_bytes()
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)  # wherever the file position was, the pass starts at byte 0
        whole, digests = archive.digest_all(f, index)
    assert whole == hashlib.sha256(raw).hexdigest()
    assert digests == {m.name: hashlib.sha256(raw[m.data_offset : m.data_offset + m.size]).hexdigest()
                       for m in index.members}
    assert digests == {**{n: sha(s if isinstance(s, bytes) else Path(s).read_bytes()) for n, s in members},
                       "signatures/customer.sigstore.json": sha(b"c" * 700)}


def test_an_appended_or_replaced_signature_is_padded_to_a_block_and_the_archive_ends_as_tar_ends_it(
        tmp_path: Path) -> None:
    # The last member's padding is zeros followed by zeros, so only the file's length shows it: for some
    # signature lengths the record boundary lies between a correctly and a wrongly padded end.
    path = tmp_path / "p.tar"
    archive.write(_members(tmp_path), path, EPOCH)
    for n in range(0, 3 * archive.RECORD, 211):
        data = b"s" * n
        archive.append_signature(path, "witness", data, replace=True)  # appended first, then rewritten
        last = archive.read_index(path).members[-1]
        assert (last.name, last.size) == ("signatures/witness.sigstore.json", n)
        end = last.data_offset + n + (-n % archive.BLOCK)
        assert path.stat().st_size == end + 2 * archive.BLOCK + (-(end + 2 * archive.BLOCK) % archive.RECORD), n
        with tarfile.open(path) as tar:  # GNU-compatible reading agrees
            assert tar.extractfile("signatures/witness.sigstore.json").read() == data  # type: ignore[union-attr]


def test_a_written_member_record_cannot_change() -> None:
    member = archive.Written("sbom.cdx.json", 1, "0" * 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        member.size = 2  # type: ignore[misc]
