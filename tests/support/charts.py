"""Real Helm chart sources for tests: a chart repository server, `helm push` into docker-registry, signing.

- `serve_repo(directory, ...)`: a Helm chart repository, the `helm repo index` output of `directory`
  served by a small threaded HTTP server on 127.0.0.1, optionally with basic auth (401 with
  `WWW-Authenticate: Basic`) and TLS (a test CA from tests/support/registry.make_ca). It logs every
  request path, so a test can show that nothing was asked.
- `package(chart_dir, dest, ...)`: `helm package` (optionally `--sign` with a test key).
- `push(archive, registry)`: `helm push` into a docker-registry fixture (plain HTTP, or TLS with its CA).
- `make_chart(...)`: a small chart directory with one Deployment and optional dependencies.
- `helm2_chart(...)`: the Helm 2 (`apiVersion: v1`) wordpress chart of tests/fixtures/charts/helm2, its
  requirements.yaml and requirements.lock pointed at a test repository, the lock's digest as Helm 2 wrote it.
- `gpg_keyring(directory)`: a fresh OpenPGP key made with gpg in its own GNUPGHOME; returns the legacy
  public and secret keyrings helm reads (`gpg --export`, `gpg --export-secret-keys`).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shutil
import ssl
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bundler.charts import lock_digest
from tests.support.registry import TestRegistry, make_ca


@dataclass
class ChartRepo:
    """A running chart repository. `url` is what a spec's `repo:` names."""

    __test__ = False

    url: str
    host: str
    root: Path
    server: http.server.ThreadingHTTPServer
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    requests: list[str] = field(default_factory=list)

    def index(self, base_url: str | None = None) -> None:
        """(Re)write index.yaml with `helm repo index` (archive URLs relative unless `base_url`)."""
        args = [_helm(), "repo", "index", str(self.root)]
        if base_url:
            args += ["--url", base_url]
        subprocess.run(args, check=True, capture_output=True)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_repo(root: Path, *, username: str | None = None, password: str | None = None,
               tls_dir: Path | None = None, path: str = "") -> ChartRepo:
    root.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    expected = ("Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()) if username else None
    prefix = "/" + path.strip("/") if path.strip("/") else ""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            log.append(self.path)
            if expected and self.headers.get("Authorization") != expected:
                self._reply(401, b"", {"WWW-Authenticate": 'Basic realm="charts"'})
                return
            rel = self.path.split("?", 1)[0]
            if not rel.startswith(prefix + "/"):
                self._reply(404, b"")
                return
            target = (root / rel[len(prefix) + 1:]).resolve()
            if root.resolve() not in target.parents or not target.is_file():
                self._reply(404, b"")
                return
            self._reply(200, target.read_bytes(), {"Content-Type": "application/octet-stream"})

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ca_file = None
    scheme = "http"
    if tls_dir is not None:
        ca_file, cert, key = make_ca(tls_dir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    return ChartRepo(f"{scheme}://{host}{prefix}", host, root, server, username, password, ca_file, log)


def _helm() -> str:
    local = Path(__file__).resolve().parents[2] / ".tools" / "bin" / "helm"
    return str(local) if local.exists() else (shutil.which("helm") or "helm")


def helm_env(home: Path) -> dict[str, str]:
    """helm with its config, cache and registry login kept under `home` (never the user's)."""
    return {**os.environ, "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_DATA_HOME": str(home / "data"), "HELM_REGISTRY_CONFIG": str(home / "registry.json")}


def make_chart(directory: Path, name: str, version: str, *, image: str = "nginx:1.27",
               dependencies: list[dict[str, Any]] | None = None, lock: list[dict[str, Any]] | None = None,
               chart_type: str = "application", aliases: dict[str, str] | None = None) -> Path:
    """A chart whose one Deployment runs `image` (from values); `lock`: a Chart.lock with helm's digest
    (`aliases` resolves `@name` repositories as helm's repositories.yaml would)."""
    root = directory / name
    (root / "templates").mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"apiVersion": "v2", "name": name, "version": version, "type": chart_type}
    if dependencies:
        meta["dependencies"] = dependencies
    (root / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    (root / "values.yaml").write_text(yaml.safe_dump({"image": image}))
    (root / "templates" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}-" + name + "\n"
        "spec:\n  selector:\n    matchLabels: {app: " + name + "}\n  template:\n"
        "    metadata:\n      labels: {app: " + name + "}\n    spec:\n      containers:\n"
        "        - name: main\n          image: {{ .Values.image | quote }}\n")
    if lock is not None:
        resolved = [{**d, "repository": (aliases or {}).get(str(d["repository"]).lstrip("@"), d["repository"])}
                    for d in dependencies or []]
        (root / "Chart.lock").write_text(yaml.safe_dump(
            {"dependencies": lock, "digest": lock_digest(resolved, lock), "generated": "2025-01-01T00:00:00Z"}))
    return root


HELM2 = Path(__file__).resolve().parents[1] / "fixtures" / "charts" / "helm2"
STABLE = "https://kubernetes-charts.storage.googleapis.com/"


def helm2_digest(requirements: list[dict[str, Any]]) -> str:
    """The digest Helm 2 wrote into requirements.lock: sha256 of Go's `json.Marshal` of requirements.yaml
    (helm 3 and 4 still accept it for an `apiVersion: v1` chart: resolver.HashV2Req)."""
    text = json.dumps({"dependencies": requirements}, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def helm2_chart(directory: Path, repository: str) -> Path:
    """tests/fixtures/charts/helm2/wordpress copied into `directory`, its mariadb dependency served by
    `repository` (the text of requirements.yaml and requirements.lock kept as Helm 2 wrote them; only the
    repository URL and the lock's digest change)."""
    root = directory / "wordpress"
    shutil.copytree(HELM2 / "wordpress", root)
    requirements = (root / "requirements.yaml").read_text().replace(STABLE, repository)
    (root / "requirements.yaml").write_text(requirements)
    digest = helm2_digest(yaml.safe_load(requirements)["dependencies"])
    lock = (root / "requirements.lock").read_text().replace(STABLE, repository)
    (root / "requirements.lock").write_text(re.sub(r"(?m)^digest: .*$", f"digest: {digest}", lock))
    return root


def package(chart_dir: Path, dest: Path, *, sign_key: str | None = None, secring: Path | None = None,
            raw: bool = False) -> Path:
    """`helm package` (which refuses a chart whose dependencies are not in charts/), or with `raw`, a plain
    tar.gz of the directory as other packers write it: dependencies left for `helm dependency build`."""
    dest.mkdir(parents=True, exist_ok=True)
    if raw:
        meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
        out = dest / f"{meta['name']}-{meta['version']}.tgz"
        with tarfile.open(out, "w:gz") as tar:
            tar.add(chart_dir, arcname=meta["name"])
        return out
    args = [_helm(), "package", str(chart_dir), "--destination", str(dest)]
    if sign_key:
        args += ["--sign", "--key", sign_key, "--keyring", str(secring)]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return Path(done.stdout.strip().rsplit(": ", 1)[-1])


def push(archive: Path, registry: TestRegistry, namespace: str, home: Path) -> None:
    args = [_helm(), "push", str(archive), f"oci://{registry.host}/{namespace}"]
    args += ["--plain-http"] if registry.scheme == "http" else ["--ca-file", str(registry.ca_file)]
    subprocess.run(args, check=True, capture_output=True, env=helm_env(home))


@dataclass(frozen=True)
class Keyring:
    name: str      # the key's user id, for helm package --sign --key
    public: Path   # gpg --export (what the spec names)
    secret: Path   # gpg --export-secret-keys (what helm package --sign reads)


def gpg_keyring(directory: Path, name: str = "Chart Signer") -> Keyring:
    """A new RSA signing key in a private GNUPGHOME under `directory`; its agent is stopped after export."""
    home = directory / "gnupg"
    home.mkdir(parents=True, mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    try:
        subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                        "--quick-gen-key", f"{name} <signer@example.test>", "rsa2048", "sign", "never"],
                       check=True, capture_output=True, env=env)
        public, secret = directory / "pubring.gpg", directory / "secring.gpg"
        public.write_bytes(subprocess.run(["gpg", "--batch", "--export"], check=True, capture_output=True,
                                          env=env).stdout)
        secret.write_bytes(subprocess.run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                                           "--export-secret-keys"], check=True, capture_output=True, env=env).stdout)
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], capture_output=True, env=env, check=False)
    return Keyring(name, public, secret)


# The registries of an e2e spec whose images come from the test registry standing in for docker.io, and whose
# charts come from a local chart repository, both over plain HTTP. Fill with .format(registry=, repo_host=).
MIRRORED_REGISTRIES = """registries:
  - host: docker.io
    mirrors: ["{registry}"]
    skipUpstream: true
  - host: "{registry}"
    insecure: true
  - host: "{repo_host}"
    insecure: true
"""
