"""cli.py paths the command tests do not take: `ref` as text, --verbose tracebacks, a key password with
no terminal, option pairs that go together or exclude each other, an unreadable --vendored list, a
skipped signature in verify's text output, and the live progress line on a terminal."""

from __future__ import annotations

import io
import logging
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bundler import cli, keys
from bundler.errors import InputError
from tests.conftest import REPO
from tests.support.bundles import Pki, build_bundle, write_policy

BAD_REF = "docker.io/Library/Nginx"


def test_ref_prints_canonical_or_the_error_per_line(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("ref", "nginx", BAD_REF)
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0] == "nginx\tdocker.io/library/nginx:latest"
    assert lines[1].startswith(f"{BAD_REF}\tinvalid: ") and lines[1].endswith("must be lowercase")


def test_verbose_shows_the_traceback_a_bug_report_needs(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "b.tar").write_bytes(b"")
    (tmp_path / "p.yaml").write_text("authorities: [\n")
    args = ("verify", str(tmp_path / "b.tar"), "--policy", str(tmp_path / "p.yaml"))
    quiet, loud = run_cli(*args), run_cli("--verbose", *args)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith(f"airgap-bundle: error: {tmp_path / 'p.yaml'}: malformed YAML")
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
    assert "bundler.errors.InputError" in loud.stderr


def test_an_encrypted_key_without_password_or_terminal_is_refused(tmp_path: Path) -> None:
    # run_cli keeps the environment; here the password variable must be absent, not empty
    env = {k: v for k, v in os.environ.items() if k != "AIRGAP_BUNDLE_KEY_PASSWORD"}
    res = subprocess.run([sys.executable, "-m", "bundler", "keys", "generate", "--out", str(tmp_path / "j"),
                          "--encrypt"], input="", capture_output=True, text=True, timeout=120,
                         env={**env, "PYTHONPATH": str(REPO)})
    assert res.returncode == 2, res.stderr
    assert "the private key needs a password and there is no terminal to ask for it" in res.stderr
    assert not list(tmp_path.glob("j*"))


def test_on_a_terminal_the_key_password_is_prompted_twice_and_encrypts_the_key(tmp_path: Path) -> None:
    master, terminal = pty.openpty()  # a real pseudo-terminal: click prompts only on one
    env = {k: v for k, v in os.environ.items() if k != "AIRGAP_BUNDLE_KEY_PASSWORD"}
    child = subprocess.Popen([sys.executable, "-m", "bundler", "keys", "generate", "--out", str(tmp_path / "k"),
                              "--encrypt"], stdin=terminal, stdout=terminal, stderr=terminal,
                             env={**env, "PYTHONPATH": str(REPO)}, start_new_session=True)
    os.close(terminal)
    seen = b""

    def read_until(token: bytes) -> None:
        nonlocal seen
        deadline = time.monotonic() + 120
        while token not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 1024)

    try:
        read_until(b"Private key password:")
        os.write(master, b"s3cret-pw\n")
        read_until(b"Repeat for confirmation:")
        os.write(master, b"s3cret-pw\n")
        assert child.wait(120) == 0, seen
    finally:
        os.close(master)
    assert b"s3cret-pw" not in seen  # hidden input
    assert keys.load_signer(tmp_path / "k.key", password=lambda: b"s3cret-pw").fingerprint
    with pytest.raises(InputError, match="wrong password"):
        keys.load_signer(tmp_path / "k.key", password=lambda: b"other")


def test_option_pairs(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ca.key").write_text("")
    res = run_cli("keys", "generate", "--out", str(tmp_path / "k"), "--ca-key", str(tmp_path / "ca.key"))
    assert res.returncode == 2 and "--ca-key and --ca-cert go together" in res.stderr
    res = run_cli("sweep", "--manifests", str(tmp_path), "--vendored", "v.txt", "--local-registry", "r:5000")
    assert res.returncode == 2 and "--vendored and --local-registry are exclusive" in res.stderr


def test_an_unreadable_vendored_list(run_cli, repo_root: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "v.txt").write_bytes(b"\xff\xfe")
    res = run_cli("sweep", "--manifests", str(repo_root / "tests/fixtures/manifests"), "--vendored",
                  str(tmp_path / "v.txt"))
    assert res.returncode == 2, res.stderr
    assert f"{tmp_path / 'v.txt'}: cannot read the vendored list: 'utf-8' codec can't decode" in res.stderr


def test_verify_text_names_a_signature_it_skipped(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pki = Pki(tmp_path / "pki")
    vendor, vendor_pub = pki.signer("vendor")
    stranger, _ = pki.signer("stranger")
    built = build_bundle(tmp_path / "b.tar", {"vendor": vendor, "integrator-x": stranger})
    policy = write_policy(tmp_path / "policy.yaml", {"vendor": {"keys": [vendor_pub]}})
    res = run_cli("verify", str(built.path), "--policy", str(policy))
    assert res.returncode == 0, res.stderr
    assert "signature skipped: integrator-x: " in res.stdout and "not named in the policy" in res.stdout


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_on_a_terminal_draws_one_live_line_at_most_five_times_a_second(
        capsys: pytest.CaptureFixture[str]) -> None:
    progress = cli._Progress(tty=True)
    clock = _Clock()
    progress._time, progress.start = clock, clock.now
    progress.step("blobs", 0, 4)
    clock.now += 1
    progress.transferred(2_000_000)
    progress.transferred(1_000_000)  # within 0.2 s of the last line: not drawn
    progress.step("images", 1, 2, "img-one")  # on a terminal the live line stands for image counts
    clock.now += 1
    progress.step("pull", 2, 2, "done")
    err = capsys.readouterr().err
    assert err.count("\rpull: blobs") == 3
    assert "\rpull: blobs 0/4  2.0 MB  2.0 MB/s  " in err
    assert "\rpull: blobs 0/4  3.0 MB  1.5 MB/s  \npull: done\n" in err
    assert "img-one" not in err
    progress.finish()
    assert capsys.readouterr().err.endswith("MB/s  \n")


def test_progress_without_a_terminal_prints_plain_lines(capsys: pytest.CaptureFixture[str]) -> None:
    progress = cli._Progress(tty=False)
    progress.transferred(10)
    progress.step("images", 1, 2, "docker.io/library/nginx:1.27")
    progress.step("pull", 2, 2, "2 images")
    assert capsys.readouterr().err == "pull: 1/2 docker.io/library/nginx:1.27\npull: 2 images\n"


def test_logging_set_up_by_a_host_program_is_left_alone() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    try:
        before = list(root.handlers)
        cli._log_to_stderr()
        assert root.handlers == before
    finally:
        root.removeHandler(handler)
