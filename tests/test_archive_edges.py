"""archive.py's refusals and failure paths, each with the exact error, and nothing changed on disk."""

from __future__ import annotations

import errno
import io
import os
import resource
import tarfile
from pathlib import Path

import pytest

from bundler import archive
from bundler.bundlefile import open_file
from bundler.errors import ArchiveError, InputError, UnlistedMemberError, UnsafeArchiveError
from tests.support.bundles import EPOCH, sha
from tests.support.limits import file_size_limit

STATEMENT = (archive.STATEMENT, b'{"statement":true}')

pytestmark = pytest.mark.filterwarnings("error")  # see tests/test_archive.py


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tf.addfile(e)
            else:
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tf.addfile(info, io.BytesIO(e[1]))
    return path


@pytest.mark.parametrize(("name", "why"), [
    ("", "an empty name"),
    ("a/" + "n" * 4100, "a name longer than 4096 bytes"),
    ("a\\b", "a backslash or control character"),
    ("a\x07b", "a backslash or control character"),
    ("a\x7fb", "a backslash or control character"),
])
def test_unsafe_names_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(UnsafeArchiveError, match=f"has {why}"):
        archive.check_name(name)


def test_write_refuses_a_source_that_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="/dev/null: not a regular file"):
        archive.write([STATEMENT, ("manifests/x.yaml", Path("/dev/null"))], tmp_path / "b.tar", EPOCH)
    assert list(tmp_path.iterdir()) == []


SHORTER_THAN_STAT = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # st_size 4096, holds ~50 bytes


@pytest.mark.skipif(not SHORTER_THAN_STAT.exists(), reason="needs a sysfs file whose size is not its length")
def test_write_refuses_a_source_whose_size_changes_while_copied(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="changed size while being archived"):
        archive.write([STATEMENT, ("manifests/x", SHORTER_THAN_STAT)], tmp_path / "b.tar", EPOCH)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_a_misnamed_signature_and_a_member_under_a_file(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="signatures/vendor.json is not signatures/<authority>.sigstore.json"):
        archive.write([STATEMENT, ("signatures/vendor.json", b"{}")], tmp_path / "b.tar", EPOCH)
    with pytest.raises(UnsafeArchiveError, match="member 'charts/a/b' lies under the file 'charts/a'"):
        archive.write([STATEMENT, ("charts/a", b"1"), ("charts/a/b", b"2")], tmp_path / "b.tar", EPOCH)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_bundle_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.tar: cannot open the bundle: No such file or directory"):
        archive.read_index(tmp_path / "nope.tar")


def test_folder_entries_are_accepted_and_skipped(tmp_path: Path) -> None:
    folder = tarfile.TarInfo("manifests/")
    folder.type = tarfile.DIRTYPE
    path = _tar(tmp_path / "b.tar", [STATEMENT, folder, ("manifests/x.yaml", b"x")])
    index = archive.read_index(path)
    assert [m.name for m in index.members] == [archive.STATEMENT, "manifests/x.yaml"]


def test_a_tar_without_statement_is_not_a_bundle(tmp_path: Path) -> None:
    path = _tar(tmp_path / "b.tar", [("manifests/x.yaml", b"x")])
    with pytest.raises(ArchiveError, match="no bundle.intoto.json: not an airgap bundle"):
        archive.read_statement(path)
    before = path.read_bytes()
    with pytest.raises(ArchiveError, match="no bundle.intoto.json: not a bundle"):
        archive.append_signature(path, "vendor", b"{}")
    assert path.read_bytes() == before


def test_member_reads_stop_at_the_cap_and_at_a_short_file(tmp_path: Path) -> None:
    path = _tar(tmp_path / "b.tar", [STATEMENT])
    member = archive.read_index(path).get(archive.STATEMENT)
    assert member is not None
    with open(path, "rb") as f:
        with pytest.raises(ArchiveError, match=r"bundle.intoto.json: 18 bytes, more than the 10 allowed"):
            archive.read_member(f, member, cap=10)
    cut = io.BytesIO(path.read_bytes()[: member.data_offset + 5])  # the member's data ends early
    with pytest.raises(ArchiveError, match="bundle.intoto.json: unexpected end of file"):
        archive.read_member(cut, member, cap=100)
    with pytest.raises(ArchiveError, match="bundle.intoto.json: unexpected end of file"):
        b"".join(bytes(c) for c in archive.iter_member(cut, member))


def test_append_with_an_explicit_epoch_stamps_that_mtime(tmp_path: Path) -> None:
    archive.write([STATEMENT], tmp_path / "b.tar", EPOCH)
    archive.append_signature(tmp_path / "b.tar", "customer", b"{}", epoch=EPOCH + 99)
    with tarfile.open(tmp_path / "b.tar") as tf:
        assert tf.getmember("signatures/customer.sigstore.json").mtime == EPOCH + 99
        assert tf.getmember(archive.STATEMENT).mtime == EPOCH


def test_a_failed_append_restores_the_bundle_bytes(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    archive.write([STATEMENT], path, EPOCH)
    before = path.read_bytes()
    with file_size_limit(len(before) + 1024), pytest.raises(ArchiveError) as err:
        archive.append_signature(path, "customer", b"x" * 100_000)
    assert err.value.message == f"{path}: cannot append the signature: File too large"
    assert path.read_bytes() == before
    assert archive.read_index(path).get("signatures/customer.sigstore.json") is None


def test_replacing_a_signature_of_a_bundle_that_shrank_fails_and_keeps_the_file(tmp_path: Path) -> None:
    # A re-sign rewrites the file from the header scan: if the bundle was cut in between, the copy
    # notices the missing bytes instead of writing a shorter bundle.
    path = tmp_path / "b.tar"
    archive.write([STATEMENT, ("images/blob", b"b" * 5000), ("signatures/vendor.sigstore.json", b"{}")], path, EPOCH)
    index = archive.read_index(path)
    cut = path.read_bytes()[:1536]
    path.write_bytes(cut)
    dropped = index.get("signatures/vendor.sigstore.json")
    assert dropped is not None
    with pytest.raises(ArchiveError, match="unexpected end of file in images/blob"):
        archive._rewrite_without(path, index, dropped, "signatures/vendor.sigstore.json", b"{}", EPOCH)
    assert path.read_bytes() == cut
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_extract_refuses_a_destination_under_a_missing_folder(tmp_path: Path) -> None:
    archive.write([STATEMENT], tmp_path / "b.tar", EPOCH)
    with pytest.raises(ArchiveError, match="missing is not a folder"):
        archive.extract(tmp_path / "b.tar", tmp_path / "missing" / "out",
                        {archive.STATEMENT: (len(STATEMENT[1]), sha(STATEMENT[1]))})


def test_an_io_error_while_extracting_leaves_nothing(tmp_path: Path) -> None:
    big = b"z" * 200_000
    archive.write([STATEMENT, ("images/blob", big)], tmp_path / "b.tar", EPOCH)
    expected = {archive.STATEMENT: (len(STATEMENT[1]), sha(STATEMENT[1])), "images/blob": (len(big), sha(big))}
    with file_size_limit(100_000), pytest.raises(ArchiveError, match="out: cannot extract: File too large"):
        archive.extract(tmp_path / "b.tar", tmp_path / "out", expected)
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


GROWS = Path("/proc/self/status")  # a regular file whose st_size is 0 but which holds text


@pytest.mark.skipif(not GROWS.exists(), reason="needs procfs")
def test_write_refuses_a_source_longer_than_its_size(tmp_path: Path) -> None:
    assert GROWS.stat().st_size == 0
    with pytest.raises(ArchiveError) as err:
        archive.write([STATEMENT, ("manifests/x", GROWS)], tmp_path / "b.tar", EPOCH)
    assert (err.value.message, err.value.hint) == (
        f"{GROWS}: changed size while being archived", "do not modify the build folder while a bundle is written")
    assert list(tmp_path.iterdir()) == []


def test_an_io_error_while_writing_keeps_the_old_bundle(tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    out.write_bytes(b"previous")
    with file_size_limit(50_000), pytest.raises(ArchiveError) as err:
        archive.write([STATEMENT, ("images/blob", b"b" * 100_000)], out, EPOCH)
    assert err.value.message == f"{out}: cannot write the bundle: File too large"
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_digest_all_refuses_a_file_that_changed_since_its_headers_were_read(tmp_path: Path) -> None:
    path = tmp_path / "b.tar"
    archive.write([STATEMENT, ("images/blob", b"b" * 5000)], path, EPOCH)
    index = archive.read_index(path)
    hint = "the bundle file is being modified; try again on a stable copy"
    with open(path, "ab") as f:
        f.write(b"\0")
    with open(path, "rb") as f, pytest.raises(ArchiveError) as err:
        archive.digest_all(f, index)
    assert (err.value.message, err.value.hint) == (f"{path}: grew while being read", hint)
    os.truncate(path, index.file_size - 1)
    with open(path, "rb") as f, pytest.raises(ArchiveError) as err:
        archive.digest_all(f, index)
    assert (err.value.message, err.value.hint) == (f"{path}: shorter than when its headers were read", hint)
    with pytest.raises(ArchiveError, match="^bundle: shorter than"):
        archive.digest_all(io.BytesIO(path.read_bytes()[:1000]), index)


def _sparse_statement(path: Path, size: int) -> Path:
    """A bundle whose statement is `size` zero bytes, as a sparse file: no disk or time spent on the data."""
    info = tarfile.TarInfo(archive.STATEMENT)
    info.size = size
    with open(path, "wb") as f:
        f.write(info.tobuf(tarfile.PAX_FORMAT))
        f.truncate(512 + -(-size // 512) * 512 + 1024)
    return path


def test_the_statement_cap_is_64_mib_by_default(tmp_path: Path) -> None:
    cap = 64 * 1024 * 1024
    assert archive.read_statement(_sparse_statement(tmp_path / "ok.tar", cap)) == bytes(cap)
    with pytest.raises(ArchiveError) as err:
        archive.read_statement(_sparse_statement(tmp_path / "big.tar", cap + 1))
    assert err.value.message == f"{archive.STATEMENT}: {cap + 1} bytes, more than the {cap} allowed"


def _bundle(tmp_path: Path, members: list[tuple[str, bytes]]) -> tuple[Path, dict[str, tuple[int, str]]]:
    archive.write(members, tmp_path / "b.tar", EPOCH)
    return tmp_path / "b.tar", {name: (len(data), sha(data)) for name, data in members}


def test_extract_names_at_most_five_unexpected_and_five_missing_members(tmp_path: Path) -> None:
    path, expected = _bundle(tmp_path, [STATEMENT, *((f"m{i}", b"") for i in range(6))])
    listed = {archive.STATEMENT: expected[archive.STATEMENT], **{f"n{i}": (0, sha(b"")) for i in range(6)}}
    with pytest.raises(UnlistedMemberError) as err:
        archive.extract(path, tmp_path / "out", listed)
    assert err.value.message == (f"{tmp_path / 'out'}: archive members differ from the verified list "
                                 "(unexpected: ['m0', 'm1', 'm2', 'm3', 'm4'], missing: ['n0', 'n1', 'n2', 'n3', 'n4'])")
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_extract_writes_the_extra_files_with_the_members(tmp_path: Path) -> None:
    path, expected = _bundle(tmp_path, [STATEMENT, ("d/member", b"m")])
    extra = {"d/record.json": b"beside a member", "audit/deep/record.json": b"in new folders"}
    with open(path, "rb") as f:
        archive.extract(f, tmp_path / "out", expected, extra=extra)
        assert not f.closed  # the caller's file stays the caller's
    out = tmp_path / "out"
    assert {p.relative_to(out).as_posix(): (p.stat().st_mode & 0o777, p.read_bytes() if p.is_file() else None)
            for p in out.rglob("*")} == {
        archive.STATEMENT: (0o644, STATEMENT[1]), "d": (0o755, None), "d/member": (0o644, b"m"),
        "d/record.json": (0o644, b"beside a member"), "audit": (0o755, None), "audit/deep": (0o755, None),
        "audit/deep/record.json": (0o644, b"in new folders")}


def test_extract_refuses_an_extra_file_that_is_a_member(tmp_path: Path) -> None:
    path, expected = _bundle(tmp_path, [STATEMENT, ("d/member", b"m")])
    with pytest.raises(UnlistedMemberError) as err:
        archive.extract(path, tmp_path / "out", expected, extra={"d/member": b"other"})
    assert (err.value.message, err.value.hint) == (
        f"{tmp_path / 'out'}: the bundle has a member d/member, which extraction writes itself",
        "refusing to overwrite a bundle member")
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]
    # an extra file where a member's folder is: O_EXCL refuses the existing name (not a write into a folder)
    with pytest.raises(ArchiveError) as err:
        archive.extract(path, tmp_path / "out", expected, extra={"d": b"other"})
    assert err.value.message == f"{tmp_path / 'out'}: cannot extract: File exists"
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_a_short_write_of_an_extra_file_fails_the_extraction(tmp_path: Path) -> None:
    # The kernel writes up to the size limit and reports a short count, as on a nearly full disk: the
    # record must not be left cut short while the extraction claims success.
    path, expected = _bundle(tmp_path, [STATEMENT])
    with file_size_limit(100_000), pytest.raises(ArchiveError) as err:
        archive.extract(path, tmp_path / "out", expected, extra={"record.json": b"r" * 200_000})
    assert err.value.message == f"{tmp_path / 'out'}: cannot extract: File too large"
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_running_out_of_file_descriptors_is_an_archive_error_and_leaves_nothing(tmp_path: Path) -> None:
    # With no descriptor left, the member cannot be opened and shutil.rmtree cannot open the staging
    # folder to list it: the folder is removed by name instead, and the error is the one-line
    # ArchiveError (exit 11) saying what to do, not the clean-up's own OSError.
    path, expected = _bundle(tmp_path, [STATEMENT, ("d/e/f", b"x")])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open(path, "rb") as f:
        lowest_free = os.open(os.devnull, os.O_RDONLY)
        os.close(lowest_free)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # every descriptor is now in use
        try:
            with pytest.raises(ArchiveError) as err:
                archive.extract(f, tmp_path / "out", expected)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert str(err.value) == f"{tmp_path / 'out'}: cannot extract: Too many open files " \
                             "(raise the open-file limit with ulimit -n, then run again)"
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_a_staging_folder_that_cannot_be_removed_is_named_in_the_error(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Never silently left behind: when no way of removing it works (here rmdir refused, as a busy mount
    # point would), the error gives the first failure and the folder's path, for the user to remove it.
    path, expected = _bundle(tmp_path, [STATEMENT, ("d/e/f", b"x")])
    changed = {**expected, "d/e/f": (1, sha(b"y"))}

    def refuse(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)

    monkeypatch.setattr(os, "rmdir", refuse)
    with pytest.raises(ArchiveError) as err:
        archive.extract(path, tmp_path / "out", changed)
    monkeypatch.undo()
    [staging] = [p for p in tmp_path.iterdir() if p.name != "b.tar"]
    assert staging.name.startswith(".out.staging-") and not any(p.is_file() for p in staging.rglob("*"))
    assert str(err.value) == "d/e/f: content changed between verification and extraction (the bundle file is being " \
                             f"modified; nothing was extracted); and the staging folder {staging} cannot be " \
                             "removed: Device or resource busy (remove it by hand)"


def test_when_rmtree_cannot_list_the_staging_folder_its_files_are_removed_by_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Out of descriptors, rmtree cannot open a folder to list it and gives up silently; the files extract
    # made are then removed by their names, and their folders deepest first (a parent before its child
    # would not be empty yet), so nothing is left and the extraction's own error is the one raised.
    path, expected = _bundle(tmp_path, [STATEMENT, ("a/b/c/one", b"1"), ("a/b/two", b"2"), ("d/e/f", b"x")])
    changed = {**expected, "d/e/f": (1, sha(b"y"))}
    monkeypatch.setattr(archive.shutil, "rmtree", lambda path, ignore_errors=False: None)
    with pytest.raises(UnlistedMemberError, match="d/e/f: content changed"):
        archive.extract(path, tmp_path / "out", changed)
    assert [p.name for p in tmp_path.iterdir()] == ["b.tar"]


def test_extract_takes_the_named_members_of_another_archive(tmp_path: Path) -> None:
    # An update bundle omits blobs its base carries: `also` takes exactly those from the base, hashed.
    blob = b"base layer"
    archive.write([STATEMENT, ("images/blob", blob), ("manifests/old", b"o")], tmp_path / "base.tar", EPOCH)
    path, expected = _bundle(tmp_path, [STATEMENT, ("manifests/new", b"n")])
    wanted = {"images/blob": (len(blob), sha(blob))}
    with open_file(tmp_path / "base.tar") as base:
        archive.extract(path, tmp_path / "out", expected, also=[(base, wanted)])
        assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
                      if p.is_file()) == [archive.STATEMENT, "images/blob", "manifests/new"]
        assert (tmp_path / "out" / "images" / "blob").read_bytes() == blob
        message = (f"{tmp_path / 'out2'}: the members to take from another archive are not all there, "
                   "or overlap the bundle's own")
        for bad in ({**wanted, "images/gone": (1, sha(b"x"))}, {**wanted, archive.STATEMENT: expected[archive.STATEMENT]}):
            with pytest.raises(UnlistedMemberError) as err:
                archive.extract(path, tmp_path / "out2", expected, also=[(base, bad)])
            assert err.value.message == message
    assert not (tmp_path / "out2").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out2")]
