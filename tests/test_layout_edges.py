"""layout.py's edges: a malformed check record, reads of missing, oversized and corrupted blobs, a blob
finished by another writer while this one waited for its lock, a partial file already whole, copies
across file systems (no hard link), a corrupt index.json, and write errors that leave nothing behind."""

from __future__ import annotations

import fcntl
import os
import shutil
import threading
from pathlib import Path

import pytest

from bundler.errors import DigestMismatchError
from bundler.layout import RECORD, Layout, LayoutError
from bundler.oci import OCI_MANIFEST, Descriptor, sha256_digest
from tests.support.limits import file_size_limit
from tests.support.writeback import record_writeback

DATA = b"layer " * 50_000
DIGEST = sha256_digest(DATA)


def _never(offset: int):  # type: ignore[no-untyped-def]
    raise AssertionError(f"fetched from {offset}: the bytes were already there")


def test_malformed_check_record_lines_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / RECORD).write_text(f"{'a' * 64} 1 2 x 4\nshort line\n{'b' * 63} 1 2 3 4\n")
    cache = Layout(tmp_path / "cache", remember_checks=True)
    cache.put_bytes(DATA)
    assert cache.has_blob(DIGEST)
    assert (tmp_path / "cache" / RECORD).read_text().splitlines()[-1].startswith(DIGEST[7:])


def test_read_blob_refuses_missing_oversized_and_corrupted_blobs(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(LayoutError, match=f"blob {DIGEST} is missing"):
        layout.read_blob(DIGEST)
    layout.put_bytes(DATA)
    with pytest.raises(LayoutError, match=f"blob {DIGEST} is larger than 1000 bytes"):
        layout.read_blob(DIGEST, max_size=1000)
    layout.blob_path(DIGEST).write_bytes(b"X" + DATA[1:])
    with pytest.raises(DigestMismatchError, match=f"content does not match {DIGEST}"):
        layout.read_blob(DIGEST)


def test_a_blob_another_writer_finished_during_the_wait_is_not_fetched_again(tmp_path: Path) -> None:
    layout, other = Layout(tmp_path / "a"), Layout(tmp_path / "b")
    other.put_bytes(DATA)
    errors: list[BaseException] = []
    fd = os.open(layout.partial_path(DIGEST), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the other writer holds the lock ...

    def write() -> None:
        try:
            layout.write_blob(DIGEST, len(DATA), _never)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    waiter = threading.Thread(target=write)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # ... so this one waits on it
    shutil.copyfile(other.blob_path(DIGEST), layout.blob_path(DIGEST))  # ... and finishes the blob
    os.close(fd)
    waiter.join(30)
    assert not waiter.is_alive() and not errors
    assert layout.read_blob(DIGEST) == DATA


def test_a_partial_file_that_is_already_whole_is_verified_and_kept(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.partial_path(DIGEST).write_bytes(DATA)
    layout.write_blob(DIGEST, len(DATA), _never)
    assert layout.read_blob(DIGEST) == DATA and not layout.partial_path(DIGEST).exists()


SHM = Path("/dev/shm")


@pytest.mark.skipif(not SHM.is_dir(), reason="needs a second file system for a cross-device link")
def test_link_from_another_file_system_copies_and_resumes_a_partial(tmp_path: Path) -> None:
    src_root = SHM / f"layout-{os.getpid()}-{threading.get_ident()}"
    try:
        source = Layout(src_root)
        source.put_bytes(DATA)
        assert os.stat(src_root).st_dev != os.stat(tmp_path).st_dev
        target = Layout(tmp_path / "out")
        target.partial_path(DIGEST).write_bytes(DATA[:100_000])  # an earlier copy stopped here
        assert target.link_from(source, DIGEST)
        assert target.read_blob(DIGEST) == DATA
        # a partial longer than the first 1 MiB chunk: whole chunks are skipped, the rest resumes mid-chunk
        big = os.urandom(2 * (1 << 20) + 4321)
        big_digest = source.put_bytes(big)
        target.partial_path(big_digest).write_bytes(big[: (1 << 20) + 999])
        assert target.link_from(source, big_digest)
        assert target.read_blob(big_digest, max_size=len(big)) == big
        assert os.stat(target.blob_path(DIGEST)).st_ino != os.stat(source.blob_path(DIGEST)).st_ino
        assert not target.link_from(Layout(tmp_path / "empty"), DIGEST)
    finally:
        shutil.rmtree(src_root, ignore_errors=True)


def test_a_corrupt_index_json_is_a_layout_error(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(LayoutError, match="index.json is unreadable"):
        layout.entries()


def test_write_errors_leave_no_blob_and_no_temporary_file(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with file_size_limit(100_000), pytest.raises(LayoutError, match=f"cannot write blob {DIGEST}: File too large"):
        layout.write_blob(DIGEST, len(DATA), lambda offset: [DATA[offset:]])
    assert not layout.blob_path(DIGEST).exists()
    index_before = (tmp_path / "index.json").read_bytes()
    desc = Descriptor(OCI_MANIFEST, DIGEST, len(DATA))
    with file_size_limit(len(index_before)), \
            pytest.raises(LayoutError, match="index.json: cannot write: File too large"):
        layout.set_refs({"example.test/app:1": desc})
    assert (tmp_path / "index.json").read_bytes() == index_before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".index.json")) == []


def test_a_big_blob_hands_every_8_mib_to_write_back_as_it_goes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk write of a big blob starts while it is fetched, not at the final fsync (a performance
    promise: docs/performance.md "Build"). The advice is recorded, then passed on to the kernel."""
    import bundler.layout as layout_mod

    advice = record_writeback(monkeypatch)
    big = os.urandom(20 << 20) + b"tail"
    layout = Layout(tmp_path)
    have = 3 << 20  # a partial file from an interrupted run: write-back starts where it left off
    (tmp_path / ".partial").mkdir(parents=True, exist_ok=True)
    layout.partial_path(sha256_digest(big)).write_bytes(big[:have])
    layout.write_blob(sha256_digest(big), len(big), lambda offset: (big[i:i + (1 << 20)]
                                                                   for i in range(offset, len(big), 1 << 20)))
    assert layout.blob_path(sha256_digest(big)).read_bytes() == big
    step = layout_mod.WRITEBACK_STEP
    assert step == 8 << 20
    assert advice == [(have, step), (have + step, step)]  # 19 MiB more: two whole steps, the rest to the fsync


def test_a_failing_advice_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(fd: int, offset: int, length: int, how: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refuse)
    big = os.urandom(9 << 20)
    layout = Layout(tmp_path)
    layout.write_blob(sha256_digest(big), len(big), lambda offset: [big[offset:]])
    assert layout.blob_path(sha256_digest(big)).read_bytes() == big
