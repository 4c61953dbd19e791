"""`airgap-bundle push` against real docker-registry instances: anonymous, basic auth, TLS with a custom
CA, bearer tokens, and S3 storage (moto_server). Readback is checked independently with skopeo.

The bundle is built once by the real `build` (tests/support/shipped.py): a Docker manifest list
narrowed to two platforms, an OCI index with attestation manifests, an image with 1.5 MiB layers, a
base layer shared by all three, and a Deployment naming two of them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bundler import keys, push
from bundler.errors import NotFoundError, RegistryError
from bundler.oci import INDEX_TYPES
from bundler.registry import RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from tests.conftest import REPO
from tests.support.faultproxy import Fault, start_proxy
from tests.support.registry import free_port, running_registry, start_registry
from tests.support.shipped import LOCAL, Shipped, auth_file, ship

SKOPEO = shutil.which("skopeo")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory, registry: Any, run_cli: Any) -> Shipped:
    return ship(tmp_path_factory.mktemp("shipped"), registry, run_cli)


def _push(run_cli: Any, shipped: Shipped, host: str, *extra: str, env: dict[str, str] | None = None,
          insecure: bool = True) -> subprocess.CompletedProcess[str]:
    args = ["push", str(shipped.bundle), "--policy", str(shipped.policy), "--registry", host, "--json",
            "--audit-log", str(shipped.work / "audit.jsonl"), *extra]
    if insecure:
        args += ["--insecure-registry", host]
    return run_cli(*args, cwd=shipped.work, env=env)  # type: ignore[no-any-return]


def skopeo_raw(ref: str, *args: str) -> bytes:
    """What the registry serves, read by another client: `skopeo inspect --raw`."""
    assert SKOPEO, "skopeo is installed by scripts/setup.sh"
    done = subprocess.run([SKOPEO, "inspect", "--raw", *args, f"docker://{ref}"], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def check_served(shipped: Shipped, host: str, *skopeo_args: str) -> int:
    """Every bundled image at `host`: tag -> the bundled digest, media type kept, both platforms and
    every attestation manifest by digest. Returns the number of manifests checked."""
    checked = 0
    for image in shipped.images():
        name = image["local"].split("@")[0].replace(LOCAL, host, 1)
        raw = skopeo_raw(name, *skopeo_args)
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == image["bundledDigest"], name
        top = json.loads(raw)
        assert top["mediaType"] == image["mediaType"]
        checked += 1
        if top["mediaType"] in INDEX_TYPES:
            platforms = set()
            for entry in top["manifests"]:
                child = skopeo_raw(f"{name.rsplit(':', 1)[0]}@{entry['digest']}", *skopeo_args)
                assert "sha256:" + hashlib.sha256(child).hexdigest() == entry["digest"]
                assert json.loads(child)["mediaType"] == entry["mediaType"]
                platforms.add(f"{entry['platform']['os']}/{entry['platform']['architecture']}")
                checked += 1
            assert {"linux/amd64", "linux/arm64"} <= platforms
    return checked


def test_push_anonymous_is_byte_exact_mounts_shared_layers_and_reads_back(shipped: Shipped, run_cli: Any,
                                                                          tmp_path: Path) -> None:
    with running_registry(tmp_path / "target") as target:
        done = _push(run_cli, shipped, target.host)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        # verification first, logged as verify logs it, then one line naming the endpoint
        lines = done.stderr.splitlines()
        first_ok = next(i for i, line in enumerate(lines) if line.startswith("signature ok: vendor key SHA256:"))
        target_line = next(i for i, line in enumerate(lines) if line.startswith("push: target "))
        assert first_ok < target_line and f"http://{target.host}" in lines[target_line]
        assert result["verification"]["ok"] and result["verification"]["authorities"][0]["keyid"].startswith("SHA256:")
        totals = result["totals"]
        assert totals["mounted"] >= 2, totals  # the shared base layer, into the second and third repository
        assert totals["uploaded"] > 0 and totals["missing"] == 0
        assert result["readback"]["problems"] == [] and result["readback"]["references"] == 2
        assert {i["target"].split("@")[0] for i in result["images"]} == {
            f"{target.host}/docker.io/library/web:1.0", f"{target.host}/quay.io/team/app:2.0",
            f"{target.host}/quay.io/team/tool:3.1"}
        # attestation manifests went along: app's index has four entries, two unknown/unknown
        app = next(i for i in shipped.images() if "team/app" in i["local"])
        assert len(app["attestations"]) == 2
        assert check_served(shipped, target.host, "--tls-verify=false") == 3 + 2 + 4 + 2

        # pushed again: everything is already there, nothing is uploaded
        again = json.loads(_push(run_cli, shipped, target.host).stdout)
        assert again["totals"]["uploaded"] == again["totals"]["mounted"] == again["totals"]["pushed"] == 0
        # every push appended a record: which key signed what went where
        records = [json.loads(line) for line in (shipped.work / "audit.jsonl").read_text().splitlines()]
        mine = [r for r in records if r["destination"] == f"http://{target.host}"]
        assert len(mine) == 2 and all(r["action"] == "push" and r["imageCount"] == 3 for r in mine)
        assert mine[0]["authorities"][0]["keyid"] == result["verification"]["authorities"][0]["keyid"]
        assert mine[0] == result["record"]


def test_chunked_uploads_land_byte_exact(shipped: Shipped, run_cli: Any, tmp_path: Path) -> None:
    with tarfile.open(shipped.bundle) as tar:
        big = next(m for m in tar if m.name.startswith("images/blobs/sha256/") and m.size > 1 << 20)
    with running_registry(tmp_path / "target") as target:
        proxy = start_proxy(target.url)
        # one layer's closing PUT fails: the upload goes on in its session, with the PUT alone
        proxy.add(Fault("status", match=f"digest=sha256%3A{big.name.rsplit('/', 1)[1]}", methods=("PUT",), status=503))
        try:
            done = _push(run_cli, shipped, proxy.host, "--chunk-size", "1", "--jobs", "2")
            assert done.returncode == 0, done.stderr
        finally:
            proxy.stop()
        assert json.loads(done.stdout)["resumedBytes"] == 1 << 20
        assert f"resumed at byte {1 << 20} of {big.size} in the same session" in done.stderr
        # the 1.5 MiB layers went as one 1 MiB PATCH each (inclusive Content-Range), the rest with the PUT
        patches = [r for r in proxy.log if r.method == "PATCH"]
        assert patches and all(r.content_range == f"0-{(1 << 20) - 1}" and r.received == 1 << 20 for r in patches)
        assert len(patches) == 4  # tool's own layers: 2 per platform, each over 1 MiB, each in one repository
        closing = [r for r in proxy.log if r.method == "PUT" and "digest=" in r.path]
        assert sum(1 for r in closing if 0 < r.received < 1 << 20) >= 4
        assert check_served(shipped, target.host, "--tls-verify=false") > 0


def test_basic_auth_from_the_auth_file_as_pull_finds_it(shipped: Shipped, run_cli: Any, auth_registry: Any,
                                                        tmp_path: Path) -> None:
    refused = _push(run_cli, shipped, auth_registry.host, env={"REGISTRY_AUTH_FILE": str(tmp_path / "none.json"),
                                                               "DOCKER_CONFIG": str(tmp_path)})
    assert refused.returncode == 5, refused.stderr  # authentication
    assert "Traceback" not in refused.stderr and "run the same command again" in refused.stderr
    creds = auth_file(tmp_path / "auth.json", auth_registry.host, auth_registry.username, auth_registry.password)
    done = _push(run_cli, shipped, auth_registry.host, env={"REGISTRY_AUTH_FILE": str(creds)})
    assert done.returncode == 0, done.stderr
    assert auth_registry.password not in done.stdout + done.stderr
    check_served(shipped, auth_registry.host, "--tls-verify=false",
                 "--creds", f"{auth_registry.username}:{auth_registry.password}")


def test_tls_with_a_custom_ca(shipped: Shipped, run_cli: Any, tls_registry: Any, tmp_path: Path) -> None:
    untrusted = _push(run_cli, shipped, tls_registry.host, insecure=False)
    assert untrusted.returncode == 4 and "TLS" in untrusted.stderr, untrusted.stderr
    done = _push(run_cli, shipped, tls_registry.host, "--ca-file", str(tls_registry.ca_file), insecure=False)
    assert done.returncode == 0, done.stderr
    assert f"https://{tls_registry.host}" in done.stderr
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(tls_registry.ca_file, certs / "ca.crt")
    check_served(shipped, tls_registry.host, "--cert-dir", str(certs))


def test_bearer_tokens_ask_for_push_and_the_mount_source(shipped: Shipped, run_cli: Any, token_registry: Any,
                                                         tmp_path: Path) -> None:
    creds = auth_file(tmp_path / "auth.json", token_registry.host, token_registry.username, token_registry.password)
    done = _push(run_cli, shipped, token_registry.host, env={"REGISTRY_AUTH_FILE": str(creds)})
    assert done.returncode == 0, done.stderr
    asked = " ".join(token_registry.extra["issuer"].requests)
    assert "pull%2Cpush" in asked
    assert json.loads(done.stdout)["totals"]["mounted"] >= 2  # the mount's source scope was granted too
    check_served(shipped, token_registry.host, "--tls-verify=false",
                 "--creds", f"{token_registry.username}:{token_registry.password}")


def test_nothing_is_sent_unless_the_bundle_verifies(shipped: Shipped, run_cli: Any, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assert run_cli("keys", "generate", "--out", "root", "--cert", "--ca", cwd=other).returncode == 0
    wrong = other / "policy.yaml"
    wrong.write_text(shipped.policy.read_text())
    tampered = tmp_path / "tampered.bundle.tar"
    data = bytearray(shipped.bundle.read_bytes())
    at = data.find(b"kind: Deployment")
    data[at:at + 4] = b"KIND"
    tampered.write_bytes(bytes(data))
    with running_registry(tmp_path / "target") as target:
        proxy = start_proxy(target.url)
        try:
            for bundle, policy, code in ((shipped.bundle, wrong, 25), (tampered, shipped.policy, 26)):
                done = run_cli("push", str(bundle), "--policy", str(policy), "--registry", proxy.host,
                               "--insecure-registry", proxy.host, cwd=other)
                assert done.returncode == code, done.stderr
                assert "push: target" not in done.stdout + done.stderr
            assert proxy.log == []  # not one request
        finally:
            proxy.stop()


def test_dry_run_lists_what_would_be_pushed_and_what_is_there(shipped: Shipped, run_cli: Any,
                                                              tmp_path: Path) -> None:
    with running_registry(tmp_path / "target") as target:
        before = json.loads(_push(run_cli, shipped, target.host, "--dry-run").stdout)
        assert before["dryRun"] and before["totals"]["present"] == 0 and before["totals"]["missing"] > 0
        assert not (target.storage / "docker" / "registry" / "v2" / "repositories").exists()  # nothing sent
        text = run_cli("push", str(shipped.bundle), "--policy", str(shipped.policy), "--registry", target.host,
                       "--insecure-registry", target.host, "--dry-run", cwd=shipped.work)
        assert text.returncode == 0 and "dry run: would push" in text.stdout, text.stderr
        assert _push(run_cli, shipped, target.host).returncode == 0
        after = json.loads(_push(run_cli, shipped, target.host, "--dry-run").stdout)
        assert after["totals"]["missing"] == 0 and after["totals"]["present"] == before["totals"]["missing"]


def test_a_killed_push_resumes_where_it_stopped(shipped: Shipped, tmp_path: Path) -> None:
    with running_registry(tmp_path / "target") as target:
        proxy = start_proxy(target.url)
        hold = proxy.add(Fault("hold", match="/blobs/uploads/", methods=("POST",), skip=3))
        args = [sys.executable, "-m", "bundler", "push", str(shipped.bundle), "--policy", str(shipped.policy),
                "--registry", proxy.host, "--insecure-registry", proxy.host, "--jobs", "1", "--json",
                "--audit-log", str(tmp_path / "audit.jsonl")]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        first = subprocess.Popen(args, cwd=shipped.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert hold.reached.wait(120), "the fourth upload never started"
            os.kill(first.pid, signal.SIGKILL)  # mid-push: three blobs uploaded, the fourth under way
            first.wait(30)
        finally:
            hold.release.set()
            if first.poll() is None:
                first.kill()
                first.wait()
            first.stdout.close()  # type: ignore[union-attr]
            first.stderr.close()  # type: ignore[union-attr]
        proxy.clear()
        second = subprocess.run(args, cwd=shipped.work, env=env, capture_output=True, text=True, timeout=300)
        proxy.stop()
        assert second.returncode == 0, second.stderr
        totals = json.loads(second.stdout)["totals"]
        assert totals["present"] >= 3, totals  # the blobs the killed run completed are skipped
        check_served(shipped, target.host, "--tls-verify=false")


def _client(host: str) -> RegistryClient:
    routes = plan_routes([host], [RegistryConfig(host, insecure=True)], environ={})
    return RegistryClient(routes, retries=1, backoff=0.01, sleep=lambda s: None)


def test_a_failed_push_says_what_is_in_place_and_a_rerun_resumes(shipped: Shipped, tmp_path: Path) -> None:
    trust = keys.load_trust(shipped.policy)
    now = dt.datetime.now(dt.UTC)
    with running_registry(tmp_path / "target") as target:
        proxy = start_proxy(target.url)
        proxy.add(Fault("status", match="/manifests/", methods=("PUT",), status=503, times=100))
        where = push.Target(proxy.host, insecure=True)
        with push.open_verified(shipped.bundle, trust, now=now) as bundle:
            with pytest.raises(RegistryError) as failed:
                push.push(bundle, where, _client(proxy.host), jobs=2)
            assert failed.value.exit_code == 4
            assert "blob(s) in place" in failed.value.message and "0 of 3 tag(s)" in failed.value.message
            assert "resumes" in str(failed.value)
            proxy.clear()
            result = push.push(bundle, where, _client(proxy.host), jobs=2)
        proxy.stop()
        assert result.count("uploaded") == 0 and result.count("present") > 0  # every blob was already there
        assert result.readback is not None and not result.readback.problems


def test_readback_failure_exits_30(shipped: Shipped, run_cli: Any, tmp_path: Path) -> None:
    with running_registry(tmp_path / "target") as target:
        proxy = start_proxy(target.url)
        # The registry takes everything, then does not serve one manifest back by digest.
        proxy.add(Fault("status", match="/manifests/sha256:", methods=("GET",), status=404))
        done = _push(run_cli, shipped, proxy.host)
        proxy.stop()
        assert done.returncode == 30, done.stderr
        assert "readback" in done.stderr and "Traceback" not in done.stderr


def test_readback_finds_what_the_registry_lost(shipped: Shipped, tmp_path: Path) -> None:
    trust = keys.load_trust(shipped.policy)
    with running_registry(tmp_path / "target") as target:
        where = push.Target(target.host, insecure=True)
        client = _client(target.host)
        with push.open_verified(shipped.bundle, trust, now=dt.datetime.now(dt.UTC)) as bundle:
            push.push(bundle, where, client, readback=False)
            plans = push.plan(bundle.bom, bundle.blob, where)
            assert push.read_back(bundle, plans, where, client).problems == ()
            web = next(p for p in plans if "web" in p.target.path)
            # lose the arm64 manifest and a layer, as a registry with broken storage would
            arm = next(pe.digest for pe in web.entry.platforms if pe.platform == "linux/arm64")
            links = list((target.storage / "docker/registry/v2/repositories" / web.target.path
                          / "_manifests/revisions/sha256" / arm[7:]).rglob("link"))
            assert links
            for path in links:
                path.unlink()
            layer = web.blobs[-1].digest[7:]
            shutil.rmtree(target.storage / "docker/registry/v2/blobs/sha256" / layer[:2] / layer)
            problems = push.read_back(bundle, plans, where, client).problems
        text = "\n".join(problems)
        assert arm in text and "platform linux/arm64 is not served" in text, text
        assert f"blob sha256:{layer} is missing" in text
        assert "manifests/deployment.yaml" not in text  # the index itself still resolves by digest


def test_s3_storage_on_moto_server(shipped: Shipped, run_cli: Any, tmp_path: Path) -> None:
    moto = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(moto).exists():
        pytest.skip("moto_server (PyPI moto[server]) is not installed: pip install -e '.[test]'")
    s3 = start_s3(tmp_path, moto)
    try:
        try:
            target = start_registry(tmp_path / "registry", variant="s3", s3_endpoint=s3[0])
        except RuntimeError as exc:  # pragma: no cover - depends on the distribution build
            pytest.skip(f"docker-registry with the s3 driver did not start on moto_server: {exc}")
        try:
            done = _push(run_cli, shipped, target.host)
            assert done.returncode == 0, done.stderr
            assert check_served(shipped, target.host, "--tls-verify=false") > 0
            # the blobs are in the bucket, not on disk
            import requests

            listing = requests.get(f"{s3[0]}/registry?prefix=registry/docker/registry/v2/blobs/", timeout=30).text
            tool = next(i for i in shipped.images() if "team/tool" in i["local"])
            assert tool["bundledDigest"][7:] in listing
        finally:
            target.stop()
    finally:
        os.kill(s3[1].pid, signal.SIGTERM)
        s3[1].wait(10)


def start_s3(tmp_path: Path, moto: str) -> tuple[str, subprocess.Popen[bytes]]:
    import time

    import requests

    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 (kept open for the child's lifetime)
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.put(f"{url}/registry", timeout=2).status_code == 200:
                return url, process
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    pytest.skip(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()[-500:]}")


def test_not_found_is_not_a_readback_problem_for_a_missing_tag(shipped: Shipped, tmp_path: Path) -> None:
    with running_registry(tmp_path / "target") as target:
        client = _client(target.host)
        ref = push.Target(target.host).ref(f"{LOCAL}/docker.io/library/web:1.0")
        assert client.manifest_digest(ref, "1.0") is None
        with pytest.raises(NotFoundError):
            client.get_manifest(ref, "1.0")


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_queued_uploads_and_says_what_is_in_place(shipped: Shipped, tmp_path: Path,
                                                                        stop: signal.Signals, code: int) -> None:
    with running_registry(tmp_path / "target") as target:
        proxy = start_proxy(target.url)
        hold = proxy.add(Fault("hold", match="/blobs/uploads/", methods=("POST",), skip=1))
        args = [sys.executable, "-m", "bundler", "push", str(shipped.bundle), "--policy", str(shipped.policy),
                "--registry", proxy.host, "--insecure-registry", proxy.host, "--jobs", "1",
                "--audit-log", str(tmp_path / "audit.jsonl")]
        # A suite started as a background job inherits SIGINT ignored, and Python keeps it ignored: the child
        # gets the default disposition back, as it has when a user presses Ctrl-C in a terminal.
        run = subprocess.Popen(args, cwd=shipped.work, env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert hold.reached.wait(120), "the second upload never started"
            os.kill(run.pid, stop)
        finally:
            hold.release.set()  # the upload under way finishes; the queued ones never start
            _, stderr = run.communicate(timeout=120)
            proxy.stop()
        assert run.returncode == code, stderr
        assert f"airgap-bundle: stopped by {stop.name}; no output was left half-written" in stderr
        # the first digest (the shared base: uploaded once, mounted twice) and the second one, held
        assert "push interrupted: stopped with 4 blob(s) in place (4 sent by this run" in stderr, stderr
        assert "run the same command again" in stderr and "Traceback" not in stderr
        uploads = [r for r in proxy.log if r.method == "POST" and "mount=" not in r.path]
        assert len(uploads) == 2  # the queued uploads never started (Executor.map cancels them)
