"""The bundle tar: deterministic bytes, normalised headers, header-only scan, co-sign append, safe extract."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundler import archive
from bundler.errors import ArchiveError, InputError, UnlistedMemberError, UnsafeArchiveError
from tests.support.bundles import EPOCH, sha

LONG = "images/blobs/sha256/" + "a" * 64 + "/" + "n" * 60  # > 100 bytes: needs a pax header


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
