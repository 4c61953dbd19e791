"""Out of file descriptors while a bundle is verified, inspected or joined: one line that names what could
not be opened and says to raise `ulimit -n`, exit 11 (as extraction already did: tests/test_verify_edges.py),
never a traceback, and nothing left on disk.

The real command runs under a lowered `ulimit -n`, at each limit from one where a part of a split bundle
cannot be opened up to the first at which the command succeeds. In between lies the limit at which every
part is open and nothing else can be: the next open, of a module Python imports late or of a schema, failed
with a bare OSError (a traceback, exit 1); opening a part or the bundle said "Too many open files" but
exited 2, for bad input, with no way out.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bundler import parts
from bundler.errors import InputError, RegistryError, TooManyOpenFilesError
from bundler.reference import ImageRef
from bundler.registry import RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from bundler.transport import TransportError
from tests import test_verify
from tests.conftest import REPO
from tests.support.bundles import build_bundle

world = test_verify.world
pytestmark = pytest.mark.filterwarnings("error")  # see tests/test_verify.py

HINT = "(raise the open-file limit with ulimit -n, then run again)"
PART = 4096  # bytes: the small bundle makes 8 parts, each held open while the set is read


def under_limit(limit: int, *args: str, site: bool = True) -> subprocess.CompletedProcess[str]:
    """`python -m bundler ARGS` after bash's `ulimit -n LIMIT`, as a user runs it. `site=False` starts
    Python with -S and the site-packages on PYTHONPATH: Python's own start-up (site's .pth files) needs
    more than 4 descriptors, which the single-file case needs to reach verification."""
    path = str(REPO) if site else os.pathsep.join((str(REPO), sysconfig.get_paths()["purelib"]))
    python = [sys.executable] if site else [sys.executable, "-S"]
    return subprocess.run(["bash", "-c", 'ulimit -n "$0" && exec "$@"', str(limit), *python, "-m", "bundler", *args],
                          env={**os.environ, "PYTHONPATH": path}, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60)


def sweep(limits: range, args: Sequence[str], folder: Path, *, site: bool = True) -> list[str]:
    """Run the command at each limit until it succeeds. Each failure must be one line with the hint and
    exit 11, and leave `folder` as it was (no output, no staging folder, no temporary file). Returns the
    failures' lines."""
    before = sorted(folder.iterdir())
    lines = []
    for limit in limits:
        done = under_limit(limit, *args, site=site)
        if done.returncode == 0:
            return lines
        assert (done.returncode, done.stderr.count("\n")) == (11, 1), (limit, done.returncode, done.stderr)
        assert done.stderr.startswith("airgap-bundle: error: ") and done.stderr.endswith(f" {HINT}\n"), done.stderr
        assert sorted(folder.iterdir()) == before, f"ulimit -n {limit} left files behind"
        lines.append(done.stderr)
    raise AssertionError(f"{args[0]} never succeeded up to ulimit -n {limits[-1]}: {lines[-1:]}")


@pytest.fixture
def split_set(world: dict) -> Path:
    """The small bundle split into 8 parts in a folder of its own; returns the parts index."""
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    out = world["tmp"] / "set"
    out.mkdir()
    done = parts.split(built.path, PART, world["vendor"], out_dir=out)
    assert len(done.index.parts) == 8
    return done.index_path


@pytest.mark.parametrize(("command", "writes"), [
    (["verify", "{index}", "--policy", "{policy}", "--extract", "{out}"], True),
    (["inspect", "{index}", "--policy", "{policy}"], False),
    (["join", "{index}", "--policy", "{policy}", "--output", "{out}"], True),
], ids=["verify-extract", "inspect", "join"])
def test_a_split_bundle_out_of_file_descriptors_is_one_line_exit_11_at_every_limit(
        world: dict, split_set: Path, command: list[str], writes: bool) -> None:
    out = split_set.parent / "out"
    args = [a.format(index=split_set, policy=world["policy"], out=out) for a in command]
    # 3 (stdin, stdout, stderr) + 8 parts: at 9 and 10 the last parts cannot be opened; at 11 they all are
    # and the next open fails; the command succeeds within a few more.
    lines = sweep(range(9, 20), args, split_set.parent)
    assert any(": cannot open part 8 of 8 (b.tar.part-0008): Too many open files " in line for line in lines), lines
    assert any("cannot open part" not in line for line in lines), "no limit let every part open and then failed"
    assert out.exists() == writes


def test_a_bundle_file_out_of_file_descriptors_is_one_line_and_a_json_failure(world: dict) -> None:
    # The case first seen: a single-file bundle at `ulimit -n 4` (Python started with -S to get that far),
    # where the signature check imports part of cryptography while the bundle holds the fourth descriptor.
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    args = ["verify", str(built.path), "--policy", str(world["policy"]), "--json"]
    assert sweep(range(4, 10), args, world["tmp"], site=False), "ulimit -n 4 did not fail"
    done = under_limit(4, *args, site=False)
    message = done.stderr.removeprefix("airgap-bundle: error: ").rstrip("\n")
    assert json.loads(done.stdout) == {"ok": False, "failure": {"error": "TooManyOpenFilesError", "exitCode": 11,
                                                                "message": message}}


def test_a_parts_index_is_not_taken_for_a_bundle_when_no_descriptor_is_free(split_set: Path) -> None:
    # Read as a tar, an index is "not a readable tar file": the wrong diagnosis. Out of descriptors, which
    # it is cannot be told, so is_index says so instead of guessing.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # every descriptor is now in use
    try:
        with pytest.raises(OSError) as err:
            parts.is_index(split_set)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert err.value.errno == errno.EMFILE
    assert parts.is_index(split_set)


def test_too_many_open_files_is_told_from_any_other_error() -> None:
    emfile = OSError(errno.EMFILE, "Too many open files", "/x/schema.json")
    enfile = OSError(errno.ENFILE, "Too many open files in system")
    wrapped = InputError("b.tar: cannot open the bundle: Too many open files", hint="not this one")
    wrapped.__cause__ = emfile
    outer = RuntimeError("outer")
    outer.__cause__ = wrapped
    told = [TooManyOpenFilesError.from_error(e) for e in (emfile, enfile, wrapped, outer)]
    assert [str(e) for e in told] == [
        f"/x/schema.json: cannot open: Too many open files {HINT}",
        "cannot open a file: Too many open files in system (the system's open-file table is full: close other "
        "programs or raise fs.file-max, then run again)",
        f"b.tar: cannot open the bundle: Too many open files {HINT}",
        f"/x/schema.json: cannot open: Too many open files {HINT}",  # a foreign error: what the OSError names
    ]
    assert {e.exit_code for e in told if e} == {11}
    unrelated = InputError("b.tar: cannot open the bundle: No such file or directory")
    unrelated.__cause__ = FileNotFoundError(errno.ENOENT, "No such file or directory", "b.tar")
    context_only = InputError("x")
    context_only.__context__ = emfile  # raised while handling it, not from it: some other failure
    assert [TooManyOpenFilesError.from_error(e) for e in (unrelated, context_only, OSError("no errno"))] == [None] * 3


def test_an_error_translated_with_from_none_is_told_by_what_it_replaced() -> None:
    # The registry client turns the transport's error into its own with `raise ... from None`, twice over:
    # out of descriptors while connecting, push said "connection failed" and exited 4, with no way out.
    def connect() -> None:
        try:
            try:
                raise OSError(errno.EMFILE, "Too many open files")
            except OSError as exc:
                raise TransportError(f"connection failed ({exc})") from None
        except TransportError as exc:
            raise RegistryError(f"https://127.0.0.1:5000/v2/: {exc}") from None

    with pytest.raises(RegistryError) as caught:
        connect()
    told = TooManyOpenFilesError.from_error(caught.value)
    assert told is not None and told.exit_code == 11
    assert str(told) == f"https://127.0.0.1:5000/v2/: connection failed ([Errno 24] Too many open files) {HINT}"


def test_push_out_of_file_descriptors_is_one_line_exit_11_at_every_limit(world: dict, registry: Any) -> None:
    """Past verification, push opens connections: a descriptor short there is the same one line."""
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    args = ["push", str(built.path), "--policy", str(world["policy"]), "--registry", registry.host,
            "--insecure-registry", registry.host]
    # Out of descriptors while connecting, the registry client retried 5 times, then push exited 4 with
    # "unreachable after 6 attempts" and a log line: no way out. Now: no retry, one line, exit 11, and
    # the message still says what is in place (a rerun resumes).
    lines = sweep(range(4, 40), args, world["tmp"], site=False)
    connecting = [line for line in lines if f"cannot connect to http://{registry.host}: " in line]
    assert connecting and all("; stopped with " in line for line in connecting), lines


def test_a_registry_request_out_of_descriptors_is_not_retried(registry: Any) -> None:
    # An upload, a mirror list and a resolve each retry a RegistryError; this process's open-file limit is
    # no registry's fault, and waiting cannot raise it. One request, no backoff, the error for exit 11.
    routes = plan_routes([registry.host], [RegistryConfig(registry.host, insecure=True)], environ={})
    waits: list[float] = []
    client = RegistryClient(routes, retries=5, backoff=0.01, sleep=waits.append)
    data = b"a blob no descriptor is left to send"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowest_free = os.open(os.devnull, os.O_RDONLY)
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # every descriptor is now in use
    try:
        with pytest.raises(TooManyOpenFilesError) as err:
            client.push_blob(ImageRef.parse(f"{registry.host}/fds/app"), digest, len(data),
                             lambda start, length: [data[start:start + length]])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert (client.stats["requests"], client.stats["retries"], waits) == (1, 0, [])
    assert str(err.value).startswith(f"upload {registry.host}/fds/app@{digest}: cannot connect to http://{registry.host}:")
    assert str(err.value).endswith(HINT) and err.value.exit_code == 11
