"""Start real registries for tests: the Debian `docker-registry` (distribution v2.8) on 127.0.0.1.

Variants: anonymous, basic auth (htpasswd -B), TLS (a CA and a server certificate made here with
`cryptography`), and token auth (a tiny in-process token server issuing ES256 JWTs signed with a test key
whose self-signed certificate the registry trusts). Each registry gets a free port and its own storage
folder, is polled until `/v2/` answers, and is stopped by its PID.

Used through the session fixtures in tests/conftest.py (`registry`, `auth_registry`, `tls_registry`,
`token_registry`), or directly: `with start_registry(tmp) as reg: ...` for a private one.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TestRegistry:
    """A running registry. `host` is what goes in image references: `127.0.0.1:PORT`."""

    __test__ = False  # not a pytest test class

    host: str
    url: str
    storage: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    scheme: str = "http"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None

    @property
    def verify(self) -> str | bool:
        return str(self.ca_file) if self.ca_file else True

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        server = self.extra.get("token_server")
        if isinstance(server, http.server.ThreadingHTTPServer):
            server.shutdown()
            server.server_close()


def make_ca(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `host` (IP SAN). Returns (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "airgap-bundle test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenIssuer:
    """Issues distribution-style bearer tokens (ES256 JWT with an x5c header) to one user."""

    def __init__(self, directory: Path, username: str, password: str, service: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test token issuer")])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = directory / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.username, self.password, self.service = username, password, service
        self.requests: list[str] = []
        self.max_scopes: int | None = None  # grant only the first N scopes, as some token services do

    def token(self, scopes: list[str]) -> str:
        access = []
        for scope in scopes[:self.max_scopes]:  # one `scope` per repository (a mount also names its source)
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": "test-issuer", "sub": self.username, "aud": self.service, "exp": now + 300,
                  "nbf": now - 60, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def serve(self) -> http.server.ThreadingHTTPServer:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                issuer.requests.append(self.path)
                expected = "Basic " + base64.b64encode(f"{issuer.username}:{issuer.password}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = json.dumps({"token": issuer.token(query.get("scope") or []),
                                   "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def start_registry(directory: Path, *, variant: str = "anonymous", username: str = "tester",
                   password: str = "s3cret-Pa55", proxy_url: str | None = None,
                   s3_endpoint: str | None = None) -> TestRegistry:
    """Start docker-registry in `directory` (config, storage, certs). variant: anonymous|basic|tls|token|s3.

    `proxy_url` runs it as a pull-through cache of that registry (distribution's `proxy.remoteurl`).
    `s3`: the registry's S3 storage driver on an S3-compatible server at `s3_endpoint` (bucket
    `registry`, which must exist), with redirects off so clients never talk to S3 themselves.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = directory / "storage"
    storage.mkdir(exist_ok=True)
    driver = (["  s3:", "    accesskey: test", "    secretkey: test", "    region: us-east-1",
               f"    regionendpoint: {s3_endpoint}", "    bucket: registry", "    secure: false",
               "    v4auth: true", "    rootdirectory: /registry", "  redirect:", "    disable: true"]
              if variant == "s3" else ["  filesystem:", f"    rootdirectory: {storage}"])
    lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
             "storage:", *driver, "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", f"  secret: test-{port}"]
    scheme, ca_file, extra = "http", None, {}
    if proxy_url:
        lines += ["proxy:", f"  remoteurl: {proxy_url}"]
    if variant == "tls":
        ca_file, cert, key = make_ca(directory / "tls")
        lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        scheme = "https"
    if variant == "basic":
        htpasswd = directory / "htpasswd"
        subprocess.run(["htpasswd", "-Bbc", str(htpasswd), username, password], check=True,
                       capture_output=True)
        lines += ["auth:", "  htpasswd:", "    realm: test-realm", f"    path: {htpasswd}"]
    if variant == "token":
        issuer = _TokenIssuer(directory, username, password, service="test-registry")
        server = issuer.serve()
        realm = f"http://127.0.0.1:{server.server_address[1]}/token"
        lines += ["auth:", "  token:", f"    realm: {realm}", "    service: test-registry",
                  "    issuer: test-issuer", f"    rootcertbundle: {issuer.bundle}"]
        extra = {"token_server": server, "issuer": issuer, "realm": realm}
    config = directory / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = open(directory / "registry.log", "wb")  # noqa: SIM115 (kept open for the child's lifetime)
    # The S3 driver (aws-sdk-go) refuses to start when AWS_CA_BUNDLE is set and the endpoint is plain HTTP.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    process = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, env=env)
    log.close()
    host = f"127.0.0.1:{port}"
    reg = TestRegistry(host=host, url=f"{scheme}://{host}", storage=storage, process=process,
                       username=username if variant in ("basic", "token") else None,
                       password=password if variant in ("basic", "token") else None,
                       ca_file=ca_file, scheme=scheme, extra=extra)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            reg.stop()
            raise RuntimeError(f"docker-registry exited: {(directory / 'registry.log').read_text()[-2000:]}")
        try:
            r = requests.get(f"{reg.url}/v2/", verify=str(ca_file) if ca_file else True, timeout=1)
            if r.status_code in (200, 401):
                return reg
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            reg.stop()
            raise RuntimeError("docker-registry did not become ready in 20 s")
        time.sleep(0.05)


@contextmanager
def running_registry(directory: Path, **kwargs: str | None) -> Iterator[TestRegistry]:
    reg = start_registry(directory, **kwargs)
    try:
        yield reg
    finally:
        reg.stop()
