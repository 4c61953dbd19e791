"""archive.write_hashed: the build's one pass over the payload (hash while writing, statement into a
slot reserved by its length). The bytes are those the two-pass writer gave, and every failure leaves
nothing at the output path."""

from __future__ import annotations

import functools
import hashlib
import os
import random
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from bundler import archive, pipeline
from bundler.errors import ArchiveError, DigestMismatchError, UnsafeArchiveError
from tests.support.bundles import EPOCH
from tests.support.limits import file_size_limit
from tests.support.writeback import record_writeback

STATEMENT = b'{"files":' + b"x" * 700 + b"}"
SIGNATURES = [("signatures/vendor.sigstore.json", b'{"sig":1}'), ("signatures/customer.sigstore.json", b'{"sig":2}')]
# sha256 of the archive the two-pass writer (archive.write before the single pass, commit 524a3f7) made
# of `_payload` with STATEMENT and SIGNATURES: the single pass must give these bytes, to the byte.
GOLDEN = "c147b438cca4a7f182ef5a047ab0b751e7181a1afd6a477e33f8bba1df6035c3"


def _payload(root: Path) -> list[tuple[str, Path]]:
    """Sizes around the block and chunk edges, an empty file, a non-ASCII name, a name that needs a pax header."""
    rnd = random.Random("single-pass golden")
    files = {
        "images/blobs/sha256/" + "0" * 64: rnd.randbytes(archive.CHUNK * 2 + 513),
        "images/blobs/sha256/" + "f" * 64: b"",
        "images/index.json": b'{"schemaVersion":2}\n',
        "images/oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "charts/demo-1.0.0.tgz": rnd.randbytes(512),
        "manifests/chart-d\u00e9mo.yaml": rnd.randbytes(511),
        "kustomize/" + "k" * 120 + "/overlay/kustomization.yaml": rnd.randbytes(1),
        "sbom.cdx.json": rnd.randbytes(100),
    }
    root.mkdir(exist_ok=True)
    out = []
    for n, (name, data) in enumerate(files.items()):
        (root / f"f{n}").write_bytes(data)
        out.append((name, root / f"f{n}"))
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_single_pass_gives_the_bytes_of_the_two_pass_writer(tmp_path: Path) -> None:
    files = _payload(tmp_path / "src")
    seen: list[Sequence[archive.Written]] = []

    def statement(written: Sequence[archive.Written]) -> bytes:
        seen.append(written)
        return STATEMENT

    returned = archive.write_hashed(files, tmp_path / "one.tar", EPOCH, statement=statement,
                                    signatures=lambda s: SIGNATURES if s == STATEMENT else [])
    assert returned == STATEMENT
    assert _sha(tmp_path / "one.tar") == GOLDEN
    archive.write([(archive.STATEMENT, STATEMENT), *files, *SIGNATURES], tmp_path / "two.tar", EPOCH)
    assert _sha(tmp_path / "two.tar") == GOLDEN
    (tmp_path / "statement.json").write_bytes(STATEMENT)  # every member may come from a file
    archive.write([(archive.STATEMENT, tmp_path / "statement.json"), *files, *SIGNATURES], tmp_path / "three.tar",
                  EPOCH)
    assert _sha(tmp_path / "three.tar") == GOLDEN
    # first call: sizes only, to reserve the slot; last call: what was written, in archive order
    ordered = sorted(files)
    assert [(w.name, w.size, w.sha256) for w in seen[-1]] == [
        (name, path.stat().st_size, _sha(path)) for name, path in ordered]
    assert [(w.name, w.size) for w in seen[0]] == [(w.name, w.size) for w in seen[-1]]
    assert {w.sha256 for w in seen[0]} == {"0" * 64}


def test_arriving_files_are_waited_for_only_when_the_archive_reaches_them(tmp_path: Path) -> None:
    """A build writes its archive behind the downloads: a file still arriving is sized from what its
    descriptor says and read only once its `ready()` returns; here each file is written by its own
    `ready()`, so none exists before the archive reaches it. The bytes are the golden ones."""
    files = _payload(tmp_path / "src")
    held = {path: path.read_bytes() for _, path in files}
    for path in held:
        path.unlink()
    out = tmp_path / "b.tar"
    readied: list[str] = []

    def arrive(name: str, path: Path) -> None:
        readied.append(name)
        path.write_bytes(held[path])

    arriving = [(name, archive.Arriving(path, len(held[path]), functools.partial(arrive, name, path)))
                for name, path in files]
    finished: list[list[str]] = []
    archive.write_hashed(arriving, out, EPOCH, statement=lambda _: STATEMENT, signatures=lambda _: SIGNATURES,
                         before_rename=lambda: finished.append(sorted(p.name for p in tmp_path.iterdir())))
    assert readied == sorted(name for name, _ in files)  # each once, in archive order
    assert _sha(out) == GOLDEN
    assert len(finished) == 1 and finished[0][0].startswith(".b.tar.") and "b.tar" not in finished[0]


def test_an_arriving_file_this_run_hashed_already_is_copied_without_a_second_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each payload byte is hashed once per build: a blob the run verified while downloading it comes
    with its digest (`ready()` returns it) and is only copied; any other file is hashed as written."""
    files = _payload(tmp_path / "src")
    fed: list[int] = []
    real = hashlib.sha256

    class Counting:
        def __init__(self, data: bytes = b"") -> None:
            self.inner = real(data)
            fed.append(len(data))

        def update(self, data: bytes | memoryview) -> None:
            fed.append(len(data))
            self.inner.update(data)

        def hexdigest(self) -> str:
            return self.inner.hexdigest()

    digests = {path: _sha(path) for _, path in files}  # as the download computed them
    monkeypatch.setattr(archive, "hashlib", types.SimpleNamespace(sha256=Counting))  # archive.py's own hashing
    for answer, expected in ((digests.get, 0), (lambda _: None, sum(path.stat().st_size for _, path in files))):
        fed.clear()
        out = tmp_path / f"{expected}.tar"
        known = [(name, archive.Arriving(path, path.stat().st_size, functools.partial(answer, path)))
                 for name, path in files]
        written: list[Sequence[archive.Written]] = []

        def statement(w: Sequence[archive.Written], written: list[Sequence[archive.Written]] = written) -> bytes:
            written.append(w)
            return STATEMENT

        archive.write_hashed(known, out, EPOCH, statement=statement, signatures=lambda _: SIGNATURES)
        assert sum(fed) == expected
        assert _sha(out) == GOLDEN
        assert [w.sha256 for w in written[-1]] == [digests[path] for _, path in sorted(files)]


def test_a_file_that_fails_to_arrive_or_a_failing_last_step_leaves_nothing(tmp_path: Path) -> None:
    files = _payload(tmp_path / "src")
    out = tmp_path / "b.tar"
    out.write_bytes(b"previous bundle")

    def fail() -> None:
        raise DigestMismatchError("blob sha256:1: content hashes to sha256:2")

    late = [(name, archive.Arriving(path, path.stat().st_size, fail)) for name, path in files]
    with pytest.raises(DigestMismatchError, match="content hashes to"):
        archive.write_hashed(late, out, EPOCH, statement=lambda _: STATEMENT)
    with pytest.raises(DigestMismatchError, match="content hashes to"):
        archive.write_hashed(files, out, EPOCH, statement=lambda _: STATEMENT, before_rename=fail)
    assert out.read_bytes() == b"previous bundle" and sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "src"]


def test_a_statement_whose_length_depends_on_the_digests_fails_loudly_and_leaves_nothing(tmp_path: Path) -> None:
    files = _payload(tmp_path / "src")
    out = tmp_path / "b.tar"
    out.write_bytes(b"previous bundle")

    def trimmed(written: Sequence[archive.Written]) -> bytes:
        return ",".join(w.sha256.lstrip("0") for w in written).encode()  # shorter once the real digests are in

    reserved = len(trimmed([archive.Written(n, 0, "0" * 64) for n, _ in files]))
    with pytest.raises(ArchiveError) as caught:
        archive.write_hashed(files, out, EPOCH, statement=trimmed)
    assert str(caught.value) == (
        f"{out}: the statement is {len(trimmed([archive.Written(n, 0, _sha(p)) for n, p in sorted(files)]))} bytes, "
        f"not the {reserved} reserved for it (its length must depend on the sizes only, never on the digests; "
        "this is a bug in airgap-bundle, please report it)")
    assert caught.value.exit_code == 11
    assert out.read_bytes() == b"previous bundle" and sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "src"]


def _files_under(root: Path) -> list[tuple[str, Path]]:
    return sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*") if p.is_file())


def test_a_blob_that_does_not_hash_to_its_name_stops_the_build_and_leaves_nothing(tmp_path: Path) -> None:
    good = b"a blob"
    bad = b"not what the name says"
    root = tmp_path / "payload"
    blobs = root / "images" / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    (blobs / hashlib.sha256(good).hexdigest()).write_bytes(good)
    (blobs / hashlib.sha256(b"original").hexdigest()).write_bytes(bad)
    (root / "sbom.cdx.json").write_bytes(b"{}")  # not a blob: no name to check against
    out = tmp_path / "b.tar"
    with pytest.raises(DigestMismatchError) as caught:
        archive.write_hashed(_files_under(root), out, EPOCH, statement=lambda _: b"{}",
                             check=pipeline._require_blob_named_by_digest)
    assert str(caught.value) == (
        f"images/blobs/sha256/{hashlib.sha256(b'original').hexdigest()}: content hashes to "
        f"sha256:{hashlib.sha256(bad).hexdigest()} (the cache holds a corrupted blob; delete it and build again)")
    assert caught.value.exit_code == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload"]
    (blobs / hashlib.sha256(b"original").hexdigest()).unlink()
    archive.write_hashed(_files_under(root), out, EPOCH, statement=lambda _: b"{}",
                         check=pipeline._require_blob_named_by_digest)
    assert [m.name for m in archive.read_index(out).payload] == [
        f"images/blobs/sha256/{hashlib.sha256(good).hexdigest()}", "sbom.cdx.json"]


def test_a_write_that_fails_midway_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    files = _payload(tmp_path / "src")
    out = tmp_path / "b.tar"
    out.write_bytes(b"previous bundle")
    # the kernel refuses writes past 1 MiB with EFBIG, as a full disk would: in the middle of the first blob
    with file_size_limit(archive.CHUNK), pytest.raises(ArchiveError) as caught:
        archive.write_hashed(files, out, EPOCH, statement=lambda _: STATEMENT)
    assert str(caught.value) == f"{out}: cannot write the bundle: File too large"
    assert out.read_bytes() == b"previous bundle" and sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "src"]


def test_a_payload_file_that_grows_after_the_statement_was_sized_is_refused(tmp_path: Path) -> None:
    files = _payload(tmp_path / "src")
    last = sorted(files)[-1][1]

    def grow_the_last(member: archive.Written) -> None:  # runs after each member, before the next is opened
        if member.name == sorted(files)[0][0]:
            with last.open("ab") as f:
                f.write(b"more")

    with pytest.raises(ArchiveError, match=f"{last}: changed size while being archived"):
        archive.write_hashed(files, tmp_path / "b.tar", EPOCH, statement=lambda _: STATEMENT, check=grow_the_last)
    assert not (tmp_path / "b.tar").exists()


def test_names_the_archive_writes_itself_are_refused_as_payload_and_as_signatures(tmp_path: Path) -> None:
    out = tmp_path / "b.tar"
    for name in (archive.STATEMENT, "signatures/vendor.sigstore.json"):
        with pytest.raises(ArchiveError, match=f"{name} is not a payload member"):
            archive.write_hashed([(name, b"x")], out, EPOCH, statement=lambda _: b"{}")
    with pytest.raises(UnsafeArchiveError, match="duplicate member 'a'"):
        archive.write_hashed([("a", b""), ("A", b"")], out, EPOCH, statement=lambda _: b"{}")
    for bad in ([("signatures/vendor.json", b"{}")], [SIGNATURES[0], SIGNATURES[0]]):
        with pytest.raises(ArchiveError, match=r"is not a new signatures/<authority>\.sigstore\.json"):
            archive.write_hashed([("a", b"1")], out, EPOCH, statement=lambda _: b"{}",
                                 signatures=lambda _, bad=bad: bad)
    with pytest.raises(ArchiveError, match=f"{tmp_path / 'gone'}: cannot read: No such file or directory"):
        archive.write_hashed([("a", tmp_path / "gone")], out, EPOCH, statement=lambda _: b"{}")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_of_the_very_last_write_still_fails_and_leaves_nothing(tmp_path: Path) -> None:
    # Only the end-of-archive blocks cross the limit: no later call is left to notice the error, so the
    # sink's exit must.
    files = _payload(tmp_path / "src")
    whole = tmp_path / "whole.tar"
    archive.write_hashed(files, whole, EPOCH, statement=lambda _: STATEMENT, signatures=lambda _: SIGNATURES)
    size = whole.stat().st_size
    out = tmp_path / "b.tar"
    with file_size_limit(size - 1), pytest.raises(ArchiveError) as caught:
        archive.write_hashed(files, out, EPOCH, statement=lambda _: STATEMENT, signatures=lambda _: SIGNATURES)
    assert str(caught.value) == f"{out}: cannot write the bundle: File too large"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src", "whole.tar"]


def test_the_archive_hands_every_8_mib_to_write_back_as_it_goes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle's disk write starts while it is written, not at the final fsync (a warm 1 GB build:
    1.56 s instead of 2.08 s, docs/performance.md "Build"): each 8 MiB written, in order, from the end
    of the reserved statement slot on, with no gap and no overlap."""
    advice = record_writeback(monkeypatch)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big").write_bytes(os.urandom(30 << 20))
    out = tmp_path / "big.tar"
    archive.write_hashed([("images/blobs/sha256/big", tmp_path / "src" / "big")], out, EPOCH,
                         statement=lambda _: STATEMENT, signatures=lambda _: SIGNATURES)
    # The sink writes from the end of the statement's slot: the big member's 512-byte header, then 1 MiB
    # chunks. Advice goes out once 8 MiB or more are written since the last: after 8, 16 and 24 chunks
    # (the remaining 6 MiB and the signatures are left to the fsync).
    slot_end = 512 * (1 + -(-len(STATEMENT) // 512))
    step = 8 << 20
    assert advice == [(slot_end, step + 512), (slot_end + step + 512, step), (slot_end + 2 * step + 512, step)]
