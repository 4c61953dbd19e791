"""layout.py: temp -> verify -> rename, resume from .partial, re-verification of existing blobs, index.json."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest

from bundler import layout as layout_module
from bundler.errors import DigestMismatchError, InvalidReferenceError
from bundler.layout import Layout, LayoutError
from bundler.oci import ANNOTATION_REF_NAME, OCI_MANIFEST, Descriptor, Platform, sha256_digest

DATA = os.urandom(3 * (1 << 20) + 17)
DIGEST = sha256_digest(DATA)


def chunks_from(data: bytes, offset: int, size: int = 1 << 20):  # type: ignore[no-untyped-def]
    for i in range(offset, len(data), size):
        yield data[i:i + size]


def test_new_layout_is_an_oci_layout(tmp_path: Path) -> None:
    Layout(tmp_path / "out")
    assert json.loads((tmp_path / "out/oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((tmp_path / "out/index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []


def test_write_blob_verifies_and_renames(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    offsets: list[int] = []
    counted: list[int] = []

    def fetch(offset: int):  # type: ignore[no-untyped-def]
        offsets.append(offset)
        return chunks_from(DATA, offset)

    layout.write_blob(DIGEST, len(DATA), fetch, on_bytes=counted.append)
    assert layout.blob_path(DIGEST).read_bytes() == DATA
    assert offsets == [0] and sum(counted) == len(DATA)
    assert list(layout.partial.iterdir()) == []
    assert layout.has_blob(DIGEST)


def test_bad_bytes_never_get_the_final_name(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    bad = bytearray(DATA)
    bad[12345] ^= 1
    with pytest.raises(DigestMismatchError) as info:
        layout.write_blob(DIGEST, len(DATA), lambda offset: chunks_from(bytes(bad), offset))
    assert info.value.exit_code == 7
    assert not layout.blob_path(DIGEST).exists()
    assert not layout.partial_path(DIGEST).exists()


def test_too_many_bytes_rejected(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(DigestMismatchError):
        layout.write_blob(DIGEST, len(DATA), lambda offset: chunks_from(DATA + b"x", offset))
    assert not layout.blob_path(DIGEST).exists()


def test_resume_from_partial_asks_only_for_the_rest(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.partial_path(DIGEST).write_bytes(DATA[:1_500_000])
    offsets: list[int] = []

    def fetch(offset: int):  # type: ignore[no-untyped-def]
        offsets.append(offset)
        return chunks_from(DATA, offset)

    counted: list[int] = []
    layout.write_blob(DIGEST, len(DATA), fetch, on_bytes=counted.append)
    assert offsets == [1_500_000]
    assert sum(counted) == len(DATA) - 1_500_000
    assert layout.blob_path(DIGEST).read_bytes() == DATA


def test_garbage_partial_is_discarded_not_kept(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.partial_path(DIGEST).write_bytes(b"\0" * 1000)  # e.g. after a power loss
    with pytest.raises(DigestMismatchError):
        layout.write_blob(DIGEST, len(DATA), lambda offset: chunks_from(DATA, offset))
    assert not layout.partial_path(DIGEST).exists() and not layout.blob_path(DIGEST).exists()
    layout.write_blob(DIGEST, len(DATA), lambda offset: chunks_from(DATA, offset))  # the retry starts at 0
    assert layout.blob_path(DIGEST).read_bytes() == DATA


def test_oversized_partial_restarts(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.partial_path(DIGEST).write_bytes(DATA + b"extra")
    offsets: list[int] = []
    layout.write_blob(DIGEST, len(DATA), lambda o: (offsets.append(o), chunks_from(DATA, o))[1])
    assert offsets == [0] and layout.blob_path(DIGEST).read_bytes() == DATA


def test_existing_blob_rechecked_by_digest_not_size(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    path = layout.blob_path(DIGEST)
    bad = bytearray(DATA)
    bad[0] ^= 0xFF
    path.write_bytes(bytes(bad))  # same size, wrong content
    assert not Layout(tmp_path).has_blob(DIGEST)
    assert not path.exists()


def test_read_blob_and_put_bytes(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    digest = layout.put_bytes(b'{"a":1}')
    assert layout.read_blob(digest) == b'{"a":1}'
    assert b"".join(layout.open_blob(digest)) == b'{"a":1}'


def test_link_from_shares_the_inode(tmp_path: Path) -> None:
    cache, out = Layout(tmp_path / "cache"), Layout(tmp_path / "out")
    digest = cache.put_bytes(DATA)
    assert out.link_from(cache, digest)
    assert out.blob_path(digest).stat().st_ino == cache.blob_path(digest).stat().st_ino
    assert not out.link_from(cache, sha256_digest(b"absent"))


def test_set_refs_replaces_by_name_and_resolves(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    a = Descriptor(OCI_MANIFEST, sha256_digest(b"a"), 1)
    b = Descriptor(OCI_MANIFEST, sha256_digest(b"b"), 1)
    layout.set_refs({"reg/x:1": a, "reg/y:1": a})
    layout.set_refs({"reg/x:1": b})
    entries = layout.entries()
    assert len(entries) == 2
    assert layout.resolve("reg/x:1") == Descriptor(OCI_MANIFEST, b.digest, 1,
                                                   annotations=((ANNOTATION_REF_NAME, "reg/x:1"),))
    assert layout.resolve("reg/z:1") is None
    assert not list(tmp_path.glob(".index.json.*"))  # no temp files left


def _forget_checks() -> None:
    """What a new process starts with: no checks remembered in memory."""
    from bundler import layout as layout_module

    with layout_module._checked_lock:
        layout_module._checked.clear()
        layout_module._hashed_here.clear()


def test_a_cache_remembers_its_checks_across_runs_while_stat_fields_hold(tmp_path: Path) -> None:
    cache = Layout(tmp_path, remember_checks=True)
    cache.put_bytes(DATA)
    record = (tmp_path / ".verified").read_text().split()
    assert record[0] == DIGEST.removeprefix("sha256:") and len(record) == 5
    path = cache.blob_path(DIGEST)
    st = path.stat()

    # Same bytes length, same mtime: a later run trusts the record and does not re-hash (the
    # deliberate trade-off RECORD documents; build re-hashes every bundled blob anyway).
    flipped = bytearray(DATA)
    flipped[0] ^= 1
    path.write_bytes(bytes(flipped))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    _forget_checks()
    assert Layout(tmp_path, remember_checks=True).has_blob(DIGEST)

    # An ordinary write changes mtime: the record no longer applies, the blob is re-hashed and dropped.
    path.write_bytes(bytes(flipped))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    _forget_checks()
    assert not Layout(tmp_path, remember_checks=True).has_blob(DIGEST)
    assert not path.exists()


def test_only_bytes_this_process_hashed_itself_count_as_hashed_here(tmp_path: Path) -> None:
    """A build hashes each payload byte once: a blob this run downloaded (verified as it streamed) is
    not hashed again by the archive; a blob a cache's record vouches for is (a record is a bet on stat
    fields, the bundle never takes it)."""
    cache = Layout(tmp_path / "cache", remember_checks=True)
    cache.put_bytes(DATA)
    out = Layout(tmp_path / "out")
    assert out.link_from(cache, DIGEST)
    assert cache.hashed_here(DIGEST) and out.hashed_here(DIGEST)  # one inode: the output's link counts
    assert not cache.hashed_here(sha256_digest(b"absent"))
    _forget_checks()  # the next run
    later = Layout(tmp_path / "cache", remember_checks=True)
    assert later.has_blob(DIGEST) and not later.hashed_here(DIGEST)  # trusted from the record, never hashed
    path, st = later.blob_path(DIGEST), later.blob_path(DIGEST).stat()
    assert later.has_blob(DIGEST) and not later.hashed_here(DIGEST)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched: the record no longer applies
    assert later.has_blob(DIGEST) and later.hashed_here(DIGEST)  # so it was hashed here
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2))  # changed after that hash: it counts no more
    assert not later.hashed_here(DIGEST)


def test_an_output_layout_keeps_no_record_and_tidies_to_a_plain_layout(tmp_path: Path) -> None:
    out = Layout(tmp_path)
    out.put_bytes(DATA)
    out.set_refs({"x": Descriptor(OCI_MANIFEST, DIGEST, len(DATA))})
    assert not (tmp_path / ".verified").exists()
    out.tidy()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert files == ["blobs", "blobs/sha256", f"blobs/sha256/{DIGEST.removeprefix('sha256:')}",
                     "index.json", "oci-layout"]


def test_a_complete_partial_is_kept_without_fetching(tmp_path: Path) -> None:
    # A run that died after the last byte but before the rename: nothing is fetched again.
    layout = Layout(tmp_path)
    layout.partial_path(DIGEST).write_bytes(DATA)
    offsets: list[int] = []
    layout.write_blob(DIGEST, len(DATA), lambda o: (offsets.append(o), chunks_from(DATA, o))[1])
    assert offsets == [] and layout.blob_path(DIGEST).read_bytes() == DATA


def test_blobs_are_plain_readable_files(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.write_blob(DIGEST, len(DATA), lambda o: chunks_from(DATA, o))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(layout.blob_path(DIGEST).stat().st_mode) == 0o644 & ~umask


def test_read_blob_caps_the_size_before_reading(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    digest = layout.put_bytes(b"12345")
    assert layout.read_blob(digest, max_size=5) == b"12345"
    with pytest.raises(LayoutError, match=r"blob sha256:\w+ is larger than 4 bytes$"):
        layout.read_blob(digest, max_size=4)
    big = b"m" * (16 << 20)  # the default cap: 16 MiB, no more
    assert layout.read_blob(layout.put_bytes(big)) == big
    with pytest.raises(LayoutError, match=r"is larger than 16777216 bytes$"):
        layout.read_blob(layout.put_bytes(big + b"m"))
    with pytest.raises(LayoutError, match=r"blob sha256:0+ is missing$"):
        layout.read_blob("sha256:" + "0" * 64)


def test_a_record_line_that_is_not_hex_and_four_numbers_is_ignored(tmp_path: Path) -> None:
    cache = Layout(tmp_path, remember_checks=True)
    cache.put_bytes(DATA)
    st = cache.blob_path(DIGEST).stat()
    good = (tmp_path / ".verified").read_text()
    hexd = DIGEST.removeprefix("sha256:")
    bad = [f"{hexd} {st.st_dev} {st.st_ino} {st.st_mtime_ns}",  # four fields
           f"{hexd[:-1]} {st.st_dev} {st.st_ino} {st.st_mtime_ns} {st.st_size}",  # 63 hex digits
           f"{hexd}0 {st.st_dev} {st.st_ino} {st.st_mtime_ns} {st.st_size}",  # 65
           f"{hexd} x{st.st_dev} {st.st_ino} {st.st_mtime_ns} {st.st_size}",  # not a number
           f"{hexd} {st.st_dev} {st.st_ino} {st.st_mtime_ns} {st.st_size}x", "", "garbage"]
    (tmp_path / ".verified").write_text("\n".join(bad) + "\n")
    _forget_checks()
    Layout(tmp_path, remember_checks=True)
    assert layout_module._checked == {}
    (tmp_path / ".verified").write_text("\n".join(bad) + "\n" + good)
    Layout(tmp_path, remember_checks=True)
    assert layout_module._checked == {(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size): DIGEST}


def test_link_across_file_systems_falls_back_to_a_checked_copy(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another file system than the test folder")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        cache, out = Layout(other), Layout(tmp_path / "out")
        cache.put_bytes(DATA)
        out.partial_path(DIGEST).write_bytes(DATA[:1_500_000])  # and resumes a partial copy
        assert out.link_from(cache, DIGEST)
        assert out.blob_path(DIGEST).read_bytes() == DATA
        assert out.blob_path(DIGEST).stat().st_ino != cache.blob_path(DIGEST).stat().st_ino
        out2 = Layout(tmp_path / "out2")
        assert out2.link_from(cache, DIGEST) and out2.blob_path(DIGEST).read_bytes() == DATA


def test_an_unreadable_index_is_a_layout_error(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(LayoutError, match="index.json is unreadable"):
        layout.entries()


def test_a_failed_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "index.json").mkdir()
    (tmp_path / "index.json" / "x").write_text("keeps the folder non-empty")
    with pytest.raises(OSError) as err:
        layout_module._atomic_write(tmp_path / "index.json", b"{}")
    assert err.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_a_good_blob_found_on_disk_is_hashed_once_then_trusted(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.blob_path(DIGEST).write_bytes(DATA)  # e.g. a layout another tool wrote
    _forget_checks()
    assert layout.has_blob(DIGEST)
    st = layout.blob_path(DIGEST).stat()
    assert layout_module._checked == {(st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size): DIGEST}


def test_a_layout_that_cannot_be_created_is_a_layout_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(LayoutError, match=r"^cannot create the OCI layout .*/file/out: ") as err:
        Layout(tmp_path / "file" / "out")
    assert err.value.exit_code == 11 and err.value.hint == "choose a writable folder"


def test_tidy_can_run_twice(tmp_path: Path) -> None:
    layout = Layout(tmp_path, remember_checks=True)
    layout.put_bytes(b"x")
    layout.tidy()
    layout.tidy()
    assert not layout.partial.exists() and not (tmp_path / ".verified").exists()


def test_set_refs_keeps_entries_other_tools_wrote_without_a_name(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    foreign = {"mediaType": OCI_MANIFEST, "digest": sha256_digest(b"f"), "size": 1}
    (tmp_path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [foreign]}))
    layout.set_refs({"reg/x:1": Descriptor(OCI_MANIFEST, sha256_digest(b"a"), 1)})
    assert [e.get("annotations") for e in layout.entries()] == [None, {ANNOTATION_REF_NAME: "reg/x:1"}]


# --- oci.py: the platform and descriptor model the layout stores ------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("linux/amd64", ("linux", "amd64", None)),
    (" linux/arm64 ", ("linux", "arm64", None)),
    ("linux/arm64/v8", ("linux", "arm64", None)),
    ("linux/arm64/8", ("linux", "arm64", None)),
    ("linux/aarch64/v8", ("linux", "arm64", None)),
    ("linux/arm64/v9", ("linux", "arm64", "v9")),
    ("linux/arm", ("linux", "arm", "v7")),
    ("linux/arm/7", ("linux", "arm", "v7")),
    ("linux/arm/v6", ("linux", "arm", "v6")),
    ("linux/x86_64", ("linux", "amd64", None)),
    ("linux/x86-64/v1", ("linux", "amd64", None)),
    ("linux/amd64/v2", ("linux", "amd64", "v2")),
    ("windows/386", ("windows", "386", None)),
])
def test_platform_parse_normalises_as_containerd(text: str, expected: tuple[str, str, str | None]) -> None:
    assert Platform.parse(text) == Platform(*expected)


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/arm/", "linux/arm/v7/extra", ""])
def test_platform_parse_refuses_what_is_not_os_arch_variant(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as err:
        Platform.parse(text)
    assert err.value.message == f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/arm64"


def test_platform_from_json_str_and_unknown() -> None:
    assert Platform.from_json({"os": "linux", "architecture": "arm64", "variant": "v8"}) == Platform("linux", "arm64", "v8")
    assert Platform.from_json({"os": "linux", "architecture": "amd64", "variant": ""}).variant is None
    assert Platform.from_json({}) == Platform("", "")
    assert [str(Platform.parse(p)) for p in ("linux/arm", "linux/amd64")] == ["linux/arm/v7", "linux/amd64"]
    assert Platform("unknown", "unknown").is_unknown
    assert not Platform("unknown", "amd64").is_unknown and not Platform("linux", "unknown").is_unknown
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "aarch64"))
    assert not Platform.parse("linux/arm/v6").matches(Platform("linux", "arm"))


def test_platforms_and_descriptors_are_values() -> None:
    # Sets and dict keys of platforms and descriptors (pull and layout use both), and a stable order.
    assert sorted({Platform("linux", "arm64"), Platform("linux", "amd64"), Platform("linux", "amd64")}) == [
        Platform("linux", "amd64"), Platform("linux", "arm64")]
    one = Descriptor(OCI_MANIFEST, DIGEST, 3, Platform("linux", "arm", "v7"), ((ANNOTATION_REF_NAME, "a"),))
    assert len({one, Descriptor.from_json(one.to_json())}) == 1


def test_descriptor_json_round_trip_keeps_only_what_is_set() -> None:
    arm = Descriptor(OCI_MANIFEST, DIGEST, 3, Platform("linux", "arm", "v7"), ((ANNOTATION_REF_NAME, "a"),))
    assert arm.to_json() == {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 3,
                             "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
                             "annotations": {ANNOTATION_REF_NAME: "a"}}
    plain = Descriptor(OCI_MANIFEST, DIGEST, 3, Platform("linux", "amd64"))
    assert plain.to_json() == {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 3,
                               "platform": {"architecture": "amd64", "os": "linux"}}
    assert Descriptor.from_json(arm.to_json()) == arm and Descriptor.from_json(plain.to_json()) == plain
    assert arm.annotation(ANNOTATION_REF_NAME) == "a" and plain.annotation(ANNOTATION_REF_NAME) is None


def test_a_full_disk_is_named_and_the_partial_blob_kept(tmp_path: Path) -> None:
    # /dev/full answers every write with ENOSPC: a real disk-full, no mock.
    layout = Layout(tmp_path)
    layout.partial_path(DIGEST).symlink_to("/dev/full")
    with pytest.raises(LayoutError) as err:
        layout.write_blob(DIGEST, len(DATA), lambda o: chunks_from(DATA, o))
    assert err.value.message == f"{tmp_path}: disk full while writing blob {DIGEST}"
    assert err.value.hint == "free space; a rerun resumes where this one stopped"
    assert not layout.blob_path(DIGEST).exists()


def test_a_write_that_fails_midway_closes_and_removes_its_temp_file(tmp_path: Path) -> None:
    import resource
    import signal
    before = sorted(os.listdir("/proc/self/fd"))
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10, hard))  # a file may not grow past 10 bytes: EFBIG
    try:
        with pytest.raises(OSError) as err:
            layout_module._atomic_write(tmp_path / "index.json", b"x" * 100)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert err.value.errno == errno.EFBIG
    assert list(tmp_path.iterdir()) == []
    assert sorted(os.listdir("/proc/self/fd")) == before  # the descriptor was closed


# --- names.json: the names of blobs index.json cannot name (chart indexes, tag lists) -----------------------------

def test_names_are_merged_and_read_back(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.names() == {}  # no names.json yet
    layout.set_names({"b": "sha256:" + "b" * 64, "a": "sha256:" + "a" * 64})
    layout.set_names({"b": "sha256:" + "c" * 64})  # a later name replaces, the others stay
    assert layout.names() == {"a": "sha256:" + "a" * 64, "b": "sha256:" + "c" * 64}
    assert Layout(tmp_path).names() == layout.names()  # on disk, not in memory
    (tmp_path / "names.json").write_text('["not", "a", "mapping"]')
    assert layout.names() == {}  # another shape names nothing


def test_an_unreadable_names_file_is_one_clear_error(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (tmp_path / "names.json").write_text("{broken")
    with pytest.raises(LayoutError) as err:
        layout.names()
    assert err.value.message.startswith(f"{tmp_path}/names.json is unreadable: Expecting property name")
    assert err.value.hint == "delete names.json; the next online run writes it again"
    (tmp_path / "names.json").unlink()
    (tmp_path / "names.json").mkdir()  # a read that fails: IsADirectoryError, an OSError
    with pytest.raises(LayoutError, match="names.json is unreadable: .*Is a directory"):
        layout.names()


def test_layout_files_are_written_0644_less_the_umask(tmp_path: Path) -> None:
    # Not mkstemp's 0600: other users (a registry serving the layout, a CI job) read index.json and names.json.
    old = os.umask(0o022)
    try:
        layout = Layout(tmp_path)
        layout.set_names({"x": "sha256:" + "a" * 64})
    finally:
        os.umask(old)
    for name in ("oci-layout", "index.json", "names.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
