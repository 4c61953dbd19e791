"""The OCI distribution API client: endpoints, credentials, auth, TLS, retries, mirrors, resumable blobs.

Input: routes (`{registry host: (Endpoint, ...)}`, mirrors first, built by `plan_routes` from the spec's
`RegistryConfig`s); output: manifest bytes with their media type (`get_manifest`) and blob bytes as a
stream of chunks (`blob_chunks`) that survives dropped connections by continuing with an HTTP Range
request from the byte it stopped at.

The same client pushes (`blob_exists`, `mount_blob`, `push_blob`, `manifest_digest`, `put_manifest`):
the push stage (push.py) uses it with one route, the target registry, so pull and push share auth,
TLS, retries and redaction. A chunked upload that fails midway asks the registry how much of the
session it holds and goes on from there in the same session; when it cannot (and for a monolithic
upload) it starts again in a new session. Either way after backoff, and a blob exists only once complete.
A session given up (for a new one, or when the upload fails for good or is interrupted) is cancelled
with one best-effort DELETE to its location, which never replaces the upload's own error.

Spec: OCI distribution-spec v1.1 (pulling manifests and blobs, `Range`; pushing: POST/PUT monolithic
and POST/PATCH/PUT chunked uploads, the upload status GET, canceling an upload (DELETE), `?mount=&from=`
cross-repository mounts, manifest PUT), the Docker token auth flow
(`WWW-Authenticate: Bearer realm=...,service=...,scope=...`), RFC 7617 basic auth, RFC 9110 Retry-After.

Transport is transport.py, on the standard library's http.client (not oras-py, and no longer
requests: without its import a warm pull went from 230 to 170 ms). We need byte-exact raw streams (no content
decoding), Range resumption inside one logical stream, per-request CA bundles, and our own retry policy.
Every request passes its trust (`verify`) explicitly; no ~/.netrc is read. `REQUESTS_CA_BUNDLE` and
`CURL_CA_BUNDLE` are honoured as the default CA bundle (`_default_ca`), as before. Proxies come from the
environment.

Not here: digest checking (the caller wraps streams in `oci.verified()`), storing, platform choice,
what to push in which order (push.py).
Credentials never appear in error messages (`_redact`).
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import json
import logging
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import (
    AuthError,
    DigestMismatchError,
    NotFoundError,
    RateLimitedError,
    RegistryError,
    TooManyOpenFilesError,
    UsageError,
)
from .oci import ACCEPT_MANIFESTS, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST, sha256_digest
from .reference import DEFAULT_DOMAIN, REPOSITORY_PATH_RE, ImageRef
from .spec import WILDCARD, MirrorConfig, RegistryConfig, registry_for
from .transport import Body, Response, TLSError, Transport, TransportError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20  # containerd's limit
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# Seconds a best-effort upload cancel may wait to connect or for its answer: it follows a failure, whose
# error must not be held back long (the registry purges an abandoned session by itself anyway).
CANCEL_TIMEOUT = 5.0
DOCKER_HUB_API = "registry-1.docker.io"
# A blob's bytes from `start`, `length` of them.
BlobReader = Callable[[int, int], Iterator[bytes]]
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages ("env REG_USER", "~/.docker/config.json")

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', source={self.source!r})"


@dataclass(frozen=True)
class Endpoint:
    """One place to fetch a registry's content from: the registry itself or one of its mirrors."""

    serves: str            # the registry host in image references (docker.io, quay.io, 127.0.0.1:5000)
    host: str              # host[:port] contacted
    scheme: str = "https"
    prefix: str = ""       # repository prefix on a mirror ("mirror.local/hub" serves docker.io as hub/...)
    verify: str | bool = True
    keep_alive: bool = True
    credentials: Credentials | None = None
    custom_ca: bool = False  # `verify` is the user's CA bundle (caFile / --ca-file), not the default

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def is_mirror(self) -> bool:
        return self.host != _api_host(self.serves) or bool(self.prefix)

    def repository(self, ref: ImageRef) -> str:
        return f"{self.prefix}/{ref.path}" if self.prefix else ref.path

    def describe(self) -> str:
        extra = [f"mirror of {self.serves}"] if self.is_mirror else []
        if self.scheme == "http":
            extra.append("plain HTTP")
        if self.custom_ca and self.scheme == "https":
            extra.append(f"CA {self.verify}")
        if self.credentials:
            extra.append(f"credentials from {self.credentials.source}")
        return self.url + (f"/{self.prefix}" if self.prefix else "") + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Manifest:
    """Manifest bytes exactly as served, their sha256 digest and media type."""

    data: bytes
    media_type: str
    digest: str
    endpoint: str

    def json(self) -> dict[str, Any]:
        obj = json.loads(self.data)
        if not isinstance(obj, dict):
            raise RegistryError(f"manifest {self.digest} from {self.endpoint} is not a JSON object")
        return obj


def spelled(name: str, reference: str) -> str:
    """`name:tag` or `name@sha256:...`: how a reference is written (a tag never holds a colon)."""
    return f"{name}@{reference}" if ":" in reference else f"{name}:{reference}"


def _api_host(host: str) -> str:
    return DOCKER_HUB_API if host == DEFAULT_DOMAIN else host


# --- credentials ---------------------------------------------------------------------------------

def auth_files(environ: Mapping[str, str]) -> list[Path]:
    """Where credentials are looked up, in order: REGISTRY_AUTH_FILE, then DOCKER_CONFIG or ~/.docker."""
    files = []
    if environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(environ["REGISTRY_AUTH_FILE"]))
    docker_dir = environ.get("DOCKER_CONFIG") or str(Path(environ.get("HOME", str(Path.home()))) / ".docker")
    files.append(Path(docker_dir) / "config.json")
    return files


def _auth_key(key: str) -> str:
    """`https://host:5000/v1/` -> `host:5000` (docker config keys may carry a scheme and a path)."""
    if "://" in key:
        key = urllib.parse.urlsplit(key).netloc
    return key.split("/", 1)[0]


def load_credentials(host: str, *, docker_config: bool = True, username_env: str | None = None,
                     password_env: str | None = None, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for `host`: the env vars the spec names, else the auth files (`auth_files`).

    Credential helpers (`credHelpers`, `credsStore`) are not run: the tool executes no helper binaries.

    Raises:
        AuthError: an env var the spec names is unset, or an auth file entry is malformed.
    """
    env = os.environ if environ is None else environ
    if username_env or password_env:
        user, password = env.get(username_env or ""), env.get(password_env or "")
        if not user or password is None:
            raise AuthError(f"credentials for {host}: environment variables {username_env} and {password_env} "
                            "are named in the spec but not set", hint="export them, or remove them from the spec")
        return Credentials(user, password, f"env {username_env}")
    if not docker_config:
        return None
    wanted = set(_DOCKER_HUB_KEYS) if host in _DOCKER_HUB_KEYS else {host}
    for path in auth_files(env):
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot read credentials file {path}: {exc}", hint="fix or remove the file") from None
        for key, entry in (data.get("auths") or {}).items():
            if _auth_key(key) not in wanted and key not in wanted or not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except ValueError:
                    raise AuthError(f"{path}: the auth entry for {key} is not base64 user:password") from None
                return Credentials(user, password, str(path))
            if entry.get("username"):
                return Credentials(str(entry["username"]), str(entry.get("password", "")), str(path))
    return None


# --- routes ----------------------------------------------------------------------------------------

def plan_routes(hosts: Sequence[str], configs: Sequence[RegistryConfig], *, insecure_hosts: Sequence[str] = (),
                ca_file: Path | None = None, environ: Mapping[str, str] | None = None
                ) -> dict[str, tuple[Endpoint, ...]]:
    """The endpoints for each registry host, mirrors first, upstream last (unless `skipUpstream`).

    Fails closed: a host with no `RegistryConfig` is refused. Plain HTTP only for hosts marked
    `insecure` in the spec or listed in `insecure_hosts`. `ca_file` (the CLI's `--ca-file`) applies to
    every TLS endpoint that has no `caFile` of its own.

    Raises:
        UsageError: a host the configuration does not allow.
        AuthError: credentials named in the spec are missing.
    """
    by_host = {c.host: c for c in configs}
    insecure = set(insecure_hosts) | {c.host for c in configs if c.insecure}
    routes: dict[str, tuple[Endpoint, ...]] = {}
    for host in hosts:
        config = registry_for(configs, host)
        if config is None:
            raise UsageError(f"registry {host} is not allowed: the spec's registries list {sorted(by_host) or 'none'}",
                             hint=f"add `- host: {host}` under registries: in the spec (never a public registry by default)")
        eps: list[Endpoint] = []
        if config.mirror is not None:
            eps.append(_mirror_endpoint(host, config.mirror, by_host.get(config.mirror.host), insecure,
                                        ca_file=ca_file, keep_alive=config.keep_alive, environ=environ))
        # A WILDCARD entry names no upstream: it reaches its mirror and nothing else.
        upstream = [] if config.skip_upstream or config.host == WILDCARD else [host]
        for target in [*config.mirrors, *upstream]:
            target_host, _, prefix = target.partition("/")
            own = by_host.get(target_host, config)
            ca = own.ca_file or config.ca_file or ca_file
            eps.append(Endpoint(
                serves=host,
                host=_api_host(target_host),
                scheme="http" if target_host in insecure else "https",
                prefix=prefix.strip("/"),
                verify=str(ca) if ca else _default_ca(environ),
                custom_ca=ca is not None,
                keep_alive=own.keep_alive and config.keep_alive,
                credentials=load_credentials(target_host, docker_config=own.docker_config,
                                             username_env=own.username_env, password_env=own.password_env,
                                             environ=environ),
            ))
        if not eps:
            raise UsageError(f"registry {host}: skipUpstream is set and no mirrors are listed")
        routes[host] = tuple(eps)
    return routes


def _mirror_endpoint(serves: str, mirror: MirrorConfig, own: RegistryConfig | None, insecure: set[str], *,
                     ca_file: Path | None, keep_alive: bool, environ: Mapping[str, str] | None) -> Endpoint:
    """A `mirror:` object's endpoint: its own settings first, then an entry of the mirror host's own."""
    prefix = mirror.prefix_for(serves)
    if prefix and not REPOSITORY_PATH_RE.match(prefix):
        raise UsageError(f"registry {serves}: the mirror prefix {mirror.prefix!r} becomes {prefix!r}, "
                         "which is not a repository path (lowercase letters, digits, . _ - and /; no port)",
                         hint=f"give {serves} an entry of its own, or pull it from the mirror by its own name")
    ca = mirror.ca_file or (own.ca_file if own else None) or ca_file
    named = mirror if mirror.username_env or mirror.password_env or own is None else own
    credentials = load_credentials(mirror.host, docker_config=named.docker_config, username_env=named.username_env,
                                   password_env=named.password_env, environ=environ)
    return Endpoint(
        serves=serves,
        host=mirror.host,
        scheme="http" if mirror.insecure or mirror.host in insecure else "https",
        prefix=prefix,
        verify=str(ca) if ca else _default_ca(environ),
        custom_ca=ca is not None,
        keep_alive=keep_alive and (own.keep_alive if own else True),
        credentials=credentials,
    )


def _default_ca(environ: Mapping[str, str] | None) -> str | bool:
    env = os.environ if environ is None else environ
    return env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or True


# --- the client ------------------------------------------------------------------------------------

class RegistryClient:
    """Fetches manifests and blobs over the distribution API. Thread-safe: one transport per thread.

    Args:
        routes: registry host -> endpoints to try in order (see `plan_routes`).
        retries: attempts after the first, on connection errors, 5xx and 429.
        backoff: first backoff in seconds (doubles, with jitter, capped at `max_backoff`).
        timeout: seconds to wait for a connection or for the next bytes.
    """

    def __init__(self, routes: Mapping[str, Sequence[Endpoint]], *, retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 30.0, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.routes = {h: tuple(e) for h, e in routes.items()}
        self.retries, self.backoff, self.max_backoff, self.timeout = retries, backoff, max_backoff, timeout
        self._sleep = sleep
        self._local = threading.local()
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], str] = {}
        self._challenges: dict[str, tuple[str, dict[str, str]]] = {}
        # resumes: blob downloads continued with Range; resumed_bytes: upload bytes not sent again
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "resumes": 0, "resumed_bytes": 0}
        self._retry_logged: set[str] = set()

    def describe(self) -> list[str]:
        """Every endpoint the client may contact (token realms and blob redirects are named by them)."""
        return [e.describe() for eps in self.routes.values() for e in eps]

    # manifests
    def get_manifest(self, ref: ImageRef, reference: str | None = None) -> Manifest:
        """GET a manifest or index by tag or digest, trying the endpoints in order.

        A digest reference is checked against the bytes; a tag's bytes against Docker-Content-Digest.

        Raises:
            NotFoundError, AuthError, RegistryError, DigestMismatchError.
        """
        reference = reference or ref.digest or ref.tag or "latest"
        errors: list[RegistryError] = []
        for ep in self._endpoints(ref):
            try:
                return self._get_manifest(ep, ref, reference)
            except DigestMismatchError:
                raise
            except RegistryError as exc:
                if len(self.routes[ref.domain]) > 1:
                    log.info("%s: %s; trying the next endpoint", ep.url, exc.message)
                errors.append(exc)
        raise self._pick(errors, spelled(ref.name, reference))

    def _get_manifest(self, ep: Endpoint, ref: ImageRef, reference: str) -> Manifest:
        repo = ep.repository(ref)
        name = spelled(ref.name, reference)
        resp = self._send(ep, "GET", f"/v2/{repo}/manifests/{reference}", repo, headers={"Accept": ACCEPT_MANIFESTS},
                          what=f"manifest {name}")
        try:
            declared = resp.headers.get("Content-Length")
            if declared and int(declared) > MAX_MANIFEST_BYTES:
                raise RegistryError(f"manifest {name} from {ep.url} is larger than 4 MiB")
            data = self._read_capped(resp, MAX_MANIFEST_BYTES, what=f"manifest {name}")
        finally:
            resp.close()
        digest = sha256_digest(data)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatchError(f"manifest {name} from {ep.url} hashes to {digest}",
                                      hint="the registry or a proxy served other bytes; nothing was kept")
        header = resp.headers.get("Docker-Content-Digest", "")
        if header.startswith("sha256:") and header != digest:
            raise DigestMismatchError(f"manifest {name} from {ep.url}: bytes hash to {digest}, "
                                      f"Docker-Content-Digest says {header}")
        return Manifest(data, media_type_of(data, resp.headers.get("Content-Type", ""), name), digest, ep.url)

    # blobs
    def blob_chunks(self, ref: ImageRef, digest: str, offset: int = 0) -> Iterator[bytes]:
        """The blob's bytes from `offset` on, as one stream of <= 1 MiB chunks.

        A connection dropped mid-blob is resumed with `Range: bytes=N-` (or, if the server ignores
        Range, by skipping what was already delivered), up to `retries` times. The caller checks the
        digest (oci.verified) over everything it keeps.

        Raises:
            NotFoundError, AuthError, RegistryError.
        """
        position, drops = offset, 0
        while True:
            resp, ep = self._open_blob(ref, digest, position)
            skip = position if resp.status_code == 200 else 0
            if resp.status_code == 206:
                start = _content_range_start(resp.headers.get("Content-Range", ""))
                if start is None or start > position:
                    resp.close()
                    raise RegistryError(f"blob {digest} from {ep.url}: bad Content-Range "
                                        f"{resp.headers.get('Content-Range')!r} for a request from byte {position}")
                skip = position - start
            try:
                for chunk in resp.stream(CHUNK):
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    position += len(chunk)
                    yield chunk
                return
            except (TransportError, OSError) as exc:
                drops += 1
                if drops > self.retries:
                    raise RegistryError(f"blob {ref.name}@{digest}: connection to {ep.url} failed {drops} times "
                                        f"mid-transfer ({type(exc).__name__})",
                                        hint="check the network; a rerun resumes where this one stopped") from None
                with self._lock:
                    self.stats["resumes"] += 1
                self._log_once(ep, f"blob {digest[:19]}: connection dropped at byte {position} "
                                   f"({type(exc).__name__}); resuming (logged once per endpoint)")
                self._sleep(self._delay(drops - 1, None))
            finally:
                resp.close()

    def _open_blob(self, ref: ImageRef, digest: str, position: int) -> tuple[Response, Endpoint]:
        headers = {"Accept-Encoding": "identity"}
        if position:
            headers["Range"] = f"bytes={position}-"
        errors: list[RegistryError] = []
        for ep in self._endpoints(ref):
            repo = ep.repository(ref)
            try:
                return self._send(ep, "GET", f"/v2/{repo}/blobs/{digest}", repo, headers=headers,
                                  what=f"blob {ref.name}@{digest}"), ep
            except RegistryError as exc:
                errors.append(exc)
        raise self._pick(errors, f"{ref.name}@{digest}")

    # pushing (one endpoint: the target registry; mirrors are for reading)
    def ping(self, host: str) -> None:
        """`GET /v2/` on `host`'s first endpoint: it is reachable and speaks the distribution API (200, or
        401 before authentication). One request, so an unreachable target fails once, not per blob.

        Raises:
            RegistryError: unreachable, TLS failure, or not a registry.
        """
        ep = self.routes[host][0]
        resp = self._http(ep, "GET", f"{ep.url}/v2/", {}, what=f"registry {ep.url}")
        resp.close()
        if resp.status_code not in (200, 401):
            raise RegistryError(f"{ep.url}/v2/ answered HTTP {resp.status_code}: not a container registry",
                                hint="check the host and port (the registry's API, not its web UI)")

    def blob_exists(self, ref: ImageRef, digest: str) -> bool:
        """HEAD the blob in `ref`'s repository.

        Raises:
            AuthError, RegistryError.
        """
        ep = self._endpoints(ref)[0]
        repo = ep.repository(ref)
        try:
            self._send(ep, "HEAD", f"/v2/{repo}/blobs/{digest}", repo, headers={}, push=True,
                       what=f"blob {ref.name}@{digest}").close()
        except NotFoundError:
            return False
        return True

    def mount_blob(self, ref: ImageRef, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob it already holds in `source_repository` into `ref`'s repository.

        False when the registry declined (it then opened an upload session, which is cancelled).

        Raises:
            AuthError, RegistryError.
        """
        ep = self._endpoints(ref)[0]
        repo = ep.repository(ref)
        query = urllib.parse.urlencode({"mount": digest, "from": source_repository})
        resp = self._send(ep, "POST", f"/v2/{repo}/blobs/uploads/?{query}", repo, headers={"Content-Length": "0"},
                          push=True, mount_from=source_repository, ok=frozenset({201, 202}),
                          what=f"mount {digest} from {source_repository} into {ref.name}")
        resp.close()
        if resp.status_code == 201:
            return True
        location = resp.headers.get("Location")
        if location:  # pragma: no branch - best effort: an abandoned session is purged by the registry anyway
            self._cancel_upload(ep, urllib.parse.urljoin(ep.url + "/", location),
                                _scope(repo, push=True, mount_from=source_repository),
                                f"mount {digest} from {source_repository} into {ref.name}")
        return False

    def push_blob(self, ref: ImageRef, digest: str, size: int, read: BlobReader, *, chunk_size: int = 0) -> None:
        """Upload a blob: one session (POST), then a monolithic PUT, or PATCHes of `chunk_size` bytes and a
        closing PUT when `chunk_size` is set and smaller than the blob. `read(start, length)` yields the
        blob's bytes from `start`; the registry checks `digest` before it keeps anything.

        A failed attempt (connection lost, timeout, 5xx) is retried after backoff, `retries` times. A
        chunked upload first asks the registry what the session holds (`_upload_offset`) and goes on from
        there in the same session; when the registry cannot say, it starts a new session from byte 0. A
        monolithic upload always starts a new session: its one PUT either completes the blob or leaves
        nothing the spec lets a client continue. A session given up, for a new one or because the upload
        stops (retries run out, any other error, Ctrl-C), is cancelled (`_cancel_upload`).

        Raises:
            AuthError, DigestMismatchError, RegistryError; whatever `read` raises.
        """
        ep = self._endpoints(ref)[0]
        repo = ep.repository(ref)
        what = f"upload {ref.name}@{digest}"
        chunked = 0 < chunk_size < size
        attempt, start = 0, 0
        location: str | None = None  # the session's URL for the next request; None: open a new session
        try:
            while True:
                sent = start  # the end of the bytes sent in this session, the failed request's included
                try:
                    if location is None:
                        resp = self._send(ep, "POST", f"/v2/{repo}/blobs/uploads/", repo, push=True,
                                          headers={"Content-Length": "0"}, ok=frozenset({202}), retries=0, what=what)
                        resp.close()
                        location, start = self._location(ep, resp, what), 0
                    while chunked and size - start > chunk_size:
                        sent = start + chunk_size
                        # Content-Range is inclusive (distribution-spec "Pushing a blob in chunks").
                        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(chunk_size),
                                   "Content-Range": f"{start}-{sent - 1}"}
                        resp = self._send(ep, "PATCH", location, repo, headers=headers, push=True,
                                          ok=frozenset({202}), body=_body(read, start, chunk_size), retries=0,
                                          what=what)
                        resp.close()
                        location, start = self._location(ep, resp, what), sent
                    sent = size
                    put = location + ("&" if "?" in location else "?") + urllib.parse.urlencode({"digest": digest})
                    resp = self._send(ep, "PUT", put, repo, headers={"Content-Type": "application/octet-stream"},
                                      push=True, ok=frozenset({201}), body=_body(read, start, size - start),
                                      retries=0, what=what)
                    resp.close()
                    return
                except (AuthError, DigestMismatchError):
                    raise
                except RegistryError as exc:
                    if attempt == self.retries:
                        raise RegistryError(f"{what}: failed {attempt + 1} times, last: {exc.message}",
                                            hint="check the registry's health and storage; a rerun resumes") from None
                    with self._lock:
                        self.stats["retries"] += 1
                    delay = self._delay(attempt, None)
                    log.info("%s; %s in %.1fs", exc.message, "asking the registry what it holds"
                             if chunked and location else "starting a new upload", delay)
                    self._sleep(delay)
                    attempt += 1
                    resumed = self._upload_offset(ep, repo, location, sent, what) if chunked and location else None
                    if resumed is None:
                        if location is not None:  # given up for a new one
                            self._cancel_upload(ep, location, _scope(repo, push=True), what)
                        location = None
                        continue
                    location, start = resumed
                    with self._lock:
                        self.stats["resumed_bytes"] += start
                    log.info("%s: resumed at byte %d of %d in the same session", what, start, size)
        except BaseException:
            # distribution-spec "Canceling an Upload": a client SHOULD cancel on a fatal error, while it
            # can still send a request. Whatever stopped the upload (retries run out, a refusal, the
            # bundle unreadable, Ctrl-C in this thread) is raised unchanged after it.
            if location is not None:
                self._cancel_upload(ep, location, _scope(repo, push=True), what)
            raise

    def _cancel_upload(self, ep: Endpoint, location: str, scope: str, what: str) -> None:
        """Cancel an upload session: one `DELETE <location>`, best effort. Never raises.

        distribution-spec "Canceling an Upload" (docker-registry API "Cancel Blob Upload"): 204 once
        cancelled, 404 when the session is already gone. Sent only where the session lives (its
        location, with the credentials the upload used): no retry, no redirect followed, no token fetched,
        and at most CANCEL_TIMEOUT seconds. Whatever goes wrong is one log line: the registry purges an
        abandoned session by itself. docker-registry 2.8 refuses the cancel (404 BLOB_UPLOAD_INVALID) once
        the session holds bytes its location does not count (part of a request whose answer never came),
        and with token auth wants a token with `delete` on the repository, which a push is not given
        (401 insufficient_scope): that refusal is the registry's policy, logged at debug only.
        """
        headers = {}
        auth = self._auth_header(ep, scope)
        if auth:
            headers["Authorization"] = auth
        try:
            resp = self._http(ep, "DELETE", location, headers, what="DELETE", retries=0,
                              timeout=min(CANCEL_TIMEOUT, self.timeout), follow_redirects=False)
        except Exception as exc:  # best effort: nothing here may replace the error the cancel follows
            reason = exc.message if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
        else:
            status = resp.status_code
            detail = _error_detail(resp) if status not in (200, 202, 204) else ""
            resp.close()
            if status in (200, 202, 204, 404):
                log.debug("%s: upload session %s", what, "cancelled" if status != 404 else f"unknown{detail}")
                return
            reason = f"HTTP {status}{detail}"
            if status in (401, 403):
                log.debug("%s: the registry does not let these credentials cancel the upload session (%s)",
                          what, reason)
                return
        log.info("%s: could not cancel the upload session (%s); the registry removes it when it expires",
                 what, reason)

    def _upload_offset(self, ep: Endpoint, repo: str, location: str, sent: int, what: str) -> tuple[str, int] | None:
        """Where an interrupted chunked upload goes on: (the session's URL, the first byte the registry
        lacks), or None when it cannot (the session is gone or the answer is not one to trust).

        distribution-spec v1.1, upload status: `GET <location>` answers 204 with `Range: 0-<last byte
        received>` (inclusive) and the `Location` for the next request; 404 means the session is gone.
        docker-registry 2.8 answers 404 too once the session holds bytes its `Location` does not count
        (part of a request that failed): only a request that never reached it can be resumed there.
        """
        try:
            resp = self._send(ep, "GET", location, repo, headers={}, push=True, ok=frozenset({204}), retries=0,
                              what=f"{what}: upload status")
        except RegistryError as exc:
            log.info("%s; starting a new upload", exc.message)
            return None
        resp.close()
        match = re.fullmatch(r"(?:bytes=)?0-(\d+)", resp.headers.get("Range", "").strip())
        received = int(match.group(1)) + 1 if match else 0
        # Trust no Range beyond the bytes sent in this session. A wrong Range within them cannot store a
        # wrong blob: the registry checks the digest over the whole session at the closing PUT. An empty
        # session is reported as "0-0" (docker-registry), which could also mean one byte: start over.
        if not 1 < received <= sent:
            log.info("%s: the registry reports %r for %d bytes sent; starting a new upload", what,
                     resp.headers.get("Range"), sent)
            return None
        return urllib.parse.urljoin(location, resp.headers.get("Location", "")), received

    def manifest_digest(self, ref: ImageRef, reference: str) -> str | None:
        """The digest the registry serves for a tag or digest (HEAD), or None when it has none.

        Raises:
            AuthError, RegistryError.
        """
        ep = self._endpoints(ref)[0]
        repo = ep.repository(ref)
        try:
            resp = self._send(ep, "HEAD", f"/v2/{repo}/manifests/{reference}", repo,
                              headers={"Accept": ACCEPT_MANIFESTS}, push=True, what=f"manifest {ref.name}:{reference}")
        except NotFoundError:
            return None
        resp.close()
        return resp.headers.get("Docker-Content-Digest") or None

    def put_manifest(self, ref: ImageRef, reference: str, data: bytes, media_type: str) -> None:
        """PUT manifest bytes as they are under a tag or digest; the registry must record their digest.

        Raises:
            AuthError, DigestMismatchError (the registry stored other bytes), RegistryError.
        """
        ep = self._endpoints(ref)[0]
        repo = ep.repository(ref)
        what = f"manifest {ref.name}:{reference}"
        resp = self._send(ep, "PUT", f"/v2/{repo}/manifests/{reference}", repo, headers={"Content-Type": media_type},
                          push=True, ok=frozenset({201}), body=lambda: data, what=what)
        resp.close()
        digest, stored = sha256_digest(data), resp.headers.get("Docker-Content-Digest", "")
        if stored and stored != digest:
            raise DigestMismatchError(f"{what}: {ep.url} stored {stored}, the bundle's bytes are {digest}",
                                      hint="the registry rewrote the manifest; use a registry that keeps bytes as pushed")

    def _location(self, ep: Endpoint, resp: Response, what: str) -> str:
        location = resp.headers.get("Location")
        if not location:  # pragma: no cover - distribution-spec requires it; named rather than a KeyError
            raise RegistryError(f"{what}: {ep.url} opened an upload without a Location header")
        return urllib.parse.urljoin(ep.url + "/", location)

    # tags (for chart version constraints on OCI repositories)
    def list_tags(self, ref: ImageRef, *, page_size: int = 1000) -> list[str]:
        """Every tag of `ref`'s repository (`GET /v2/<name>/tags/list`, following `Link` pages).

        Raises:
            NotFoundError, AuthError, RegistryError.
        """
        errors: list[RegistryError] = []
        for ep in self._endpoints(ref):
            repo = ep.repository(ref)
            tags: list[str] = []
            path: str | None = f"/v2/{repo}/tags/list?n={page_size}"
            try:
                while path:
                    resp = self._send(ep, "GET", path, repo, headers={"Accept": "application/json"},
                                      what=f"tags of {ref.name}")
                    try:
                        body = json.loads(self._read_capped(resp, MAX_MANIFEST_BYTES, what=f"tags of {ref.name}"))
                    except ValueError:
                        raise RegistryError(f"tags of {ref.name} from {ep.url}: not JSON") from None
                    finally:
                        resp.close()
                    if not isinstance(body, dict):
                        raise RegistryError(f"tags of {ref.name} from {ep.url}: not a JSON object")
                    tags += [str(t) for t in body.get("tags") or []]
                    link = re.match(r"\s*<([^>]+)>\s*;\s*rel=\"?next\"?", resp.headers.get("Link", ""))
                    path = link.group(1) if link else None
                return tags
            except RegistryError as exc:
                errors.append(exc)
        raise self._pick(errors, f"tags of {ref.name}")

    # plain files (Helm chart repositories: index.yaml, chart archives, provenance files)
    def url_chunks(self, url: str, *, cap: int | None = None) -> Iterator[bytes]:
        """The bytes at an http(s) URL on an allowed host, through that host's endpoints (mirrors
        first, the host's CA and credentials, basic auth on challenge). The caller checks digests.

        Raises:
            UsageError (host not allowed), NotFoundError, AuthError, RegistryError.
        """
        parts = urllib.parse.urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        errors: list[RegistryError] = []
        for ep in self._host_endpoints(parts.netloc.rpartition("@")[2], f"URL {_strip_userinfo(url)}"):
            if parts.scheme == "http" and ep.scheme == "https" and not ep.is_mirror:
                raise UsageError(f"{_strip_userinfo(url)}: plain HTTP, but the spec does not mark {parts.netloc} "
                                 "insecure", hint=f"use https://, or set insecure: true for {parts.netloc}")
            full = (f"/{ep.prefix}" if ep.prefix else "") + path
            try:
                resp = self._send(ep, "GET", full, "", headers={"Accept-Encoding": "identity"},
                                  what=f"{_strip_userinfo(url)}")
            except RegistryError as exc:
                errors.append(exc)
                continue
            return self._stream(resp, cap, what=_strip_userinfo(url))
        raise self._pick(errors, _strip_userinfo(url))

    def _stream(self, resp: Response, cap: int | None, *, what: str) -> Iterator[bytes]:
        try:
            total = 0
            for chunk in resp.stream(CHUNK, decode=True):
                total += len(chunk)
                if cap is not None and total > cap:
                    raise RegistryError(f"{what}: larger than {cap} bytes")
                yield chunk
        except TransportError as exc:
            raise RegistryError(f"{what}: connection failed while reading ({exc})") from None
        finally:
            resp.close()

    # plumbing
    def _host_endpoints(self, host: str, what: str) -> tuple[Endpoint, ...]:
        try:
            return self.routes[host]
        except KeyError:
            raise UsageError(f"registry {host} is not allowed ({what})",
                             hint=f"add `- host: {host}` under registries: in the spec") from None

    def _endpoints(self, ref: ImageRef) -> tuple[Endpoint, ...]:
        return self._host_endpoints(ref.domain, f"image {ref}")

    @staticmethod
    def _pick(errors: list[RegistryError], what: str) -> RegistryError:
        if errors and all(isinstance(e, NotFoundError) for e in errors):
            return errors[-1] if len(errors) == 1 else NotFoundError(
                f"{what}: not found on any endpoint ({'; '.join(e.message for e in errors)})")
        return next((e for e in reversed(errors) if not isinstance(e, NotFoundError)), errors[-1])

    def _transport(self) -> Transport:
        transport: Transport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = Transport(connect_timeout=min(10.0, self.timeout), read_timeout=self.timeout)
            self._local.transport = transport
        return transport

    def _delay(self, attempt: int, resp: Response | None) -> float:
        if resp is not None and resp.headers.get("Retry-After"):
            after = _retry_after(resp.headers["Retry-After"])
            if after is not None:
                return min(after, self.max_backoff * 4)
        return min(self.max_backoff, self.backoff * (2.0 ** attempt)) * (0.5 + random.random() / 2)

    def _http(self, ep: Endpoint, method: str, url: str, headers: dict[str, str], *,
              what: str, body: Body | None = None, retries: int | None = None, timeout: float | None = None,
              follow_redirects: bool = True) -> Response:
        """One logical request with retries (connection errors, 5xx, 429) and manual redirects.

        `body` makes a fresh request body for each attempt (a stream cannot be sent twice);
        `retries=0` leaves retrying to the caller (an upload resumes or restarts its session instead);
        `timeout` replaces the client's for this request; `follow_redirects=False` returns a redirect as is.
        """
        headers = {"User-Agent": "airgap-bundle", **headers}
        if not ep.keep_alive:
            headers["Connection"] = "close"
        retries = self.retries if retries is None else retries
        last: str = ""
        for attempt in range(retries + 1):
            target, hop_headers, verify = url, dict(headers), ep.verify
            try:
                for _ in range(6):
                    with self._lock:
                        self.stats["requests"] += 1
                    resp = self._transport().request(method, target, hop_headers, body=body, verify=verify,
                                                     timeout=timeout)
                    if (not follow_redirects or resp.status_code not in (301, 302, 303, 307, 308)
                            or "Location" not in resp.headers):
                        break
                    resp.close()
                    nxt = urllib.parse.urljoin(target, resp.headers["Location"])
                    if urllib.parse.urlsplit(nxt).netloc != urllib.parse.urlsplit(target).netloc:
                        # Blob storage elsewhere (S3, CDN): no registry credentials, default CA bundle.
                        hop_headers.pop("Authorization", None)
                        verify = _default_ca(None)
                    target = nxt
            except TLSError as exc:
                raise RegistryError(f"{what}: TLS verification failed for {ep.url}: {self._redact(str(exc), ep)}",
                                    hint="give the registry's CA with caFile in the spec or --ca-file") from None
            except TransportError as exc:
                if hint := exc.out_of_descriptors:  # this process's limit, not the network: no retry can help,
                    # and not a RegistryError, which an upload, a mirror list or a resolve would retry
                    raise TooManyOpenFilesError(f"{what}: cannot connect to {ep.url}: {exc}", hint=hint) from None
                if exc.refused and _literal_or_loopback(urllib.parse.urlsplit(target).hostname or ""):
                    # Nothing listens there, and no name resolution or balancer can change that by retrying.
                    raise RegistryError(f"{what}: connection refused by {target}",
                                        hint="start the registry, or fix its host and port (the spec's "
                                             "registries:, or push --registry)") from None
                last = self._redact(str(exc), ep)
                resp = None
            else:
                assert resp is not None  # the redirect loop always makes a request
                if resp.status_code not in RETRY_STATUS or attempt == retries:
                    return resp
                last = f"HTTP {resp.status_code}"
                resp.close()
            if attempt < retries:
                with self._lock:
                    self.stats["retries"] += 1
                delay = self._delay(attempt, resp)
                self._log_once(ep, f"{what}: {last}; retrying (up to {self.retries} times per request, "
                                   f"with backoff; logged once per endpoint)")
                self._sleep(delay)
        raise RegistryError(f"{what}: {ep.url} unreachable after {retries + 1} attempts ({last})",
                            hint="check the address, the network, or the registry's health")

    def _log_once(self, ep: Endpoint, message: str) -> None:
        """The first retry on an endpoint is news; the rest are in `stats` (a flaky mirror would flood)."""
        with self._lock:
            if ep.url in self._retry_logged:
                return
            self._retry_logged.add(ep.url)
        log.info("%s: %s", ep.url, message)

    def _auth_header(self, ep: Endpoint, scope: str) -> str | None:
        with self._lock:
            challenge = self._challenges.get(ep.url)
            if challenge is None:
                return None
            if challenge[0] == "bearer":
                token = self._tokens.get((ep.url, scope))
                return f"Bearer {token}" if token else None
        if ep.credentials:
            raw = f"{ep.credentials.username}:{ep.credentials.password}".encode()
            return "Basic " + base64.b64encode(raw).decode()
        return None

    def _send(self, ep: Endpoint, method: str, path: str, repo: str, *, headers: dict[str, str],
              what: str, push: bool = False, mount_from: str | None = None,
              ok: frozenset[int] = frozenset({200, 206}), body: Body | None = None,
              retries: int | None = None) -> Response:
        """A request with auth (challenge, basic, bearer token dance), mapped to our errors.

        `path` is a path on the endpoint or an absolute URL (an upload's Location). `push` asks the
        token service for pull and push on `repo`, `mount_from` also for pull on that repository.
        """
        scope = _scope(repo, push=push, mount_from=mount_from)
        url = path if "://" in path else ep.url + path
        for attempt in range(2):
            h = dict(headers)
            auth = self._auth_header(ep, scope)
            if auth:
                h["Authorization"] = auth
            resp = self._http(ep, method, url, h, what=what, body=body, retries=retries)
            if resp.status_code != 401 or attempt == 1:
                break
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.close()
            scheme, params = _parse_challenge(challenge)
            with self._lock:
                self._challenges[ep.url] = (scheme, params)
            if scheme == "bearer":
                self._fetch_token(ep, params, scope, what)
            elif scheme != "basic" or ep.credentials is None:
                break
        if resp.status_code in ok:
            return resp
        status = resp.status_code
        detail = _error_detail(resp) if method != "HEAD" else ""
        resp.close()
        if status in (401, 403):
            source = (f"the credentials from {ep.credentials.source}" if ep.credentials
                      else f"no credentials (looked in env vars named in the spec and {', '.join(map(str, auth_files(os.environ)))})")
            raise AuthError(f"{what}: {ep.url} refused access (HTTP {status}) with {source}",
                            hint="log in (docker login / podman login) or name usernameEnv/passwordEnv in the spec")
        if status == 404:
            where = url.partition("?")[0] if "://" in path else url  # an upload's Location: without its state
            raise NotFoundError(f"{what}: not found at {where}", hint="check the repository, tag or digest")
        if status == 429:
            raise RateLimitedError(f"{what}: {ep.url} kept answering 429 Too Many Requests",
                                   hint="wait, authenticate, or configure a mirror")
        if status == 416:
            raise RegistryError(f"{what}: {ep.url} refused the byte range (HTTP 416)")
        raise RegistryError(f"{what}: {ep.url} answered HTTP {status}{detail}")

    def _fetch_token(self, ep: Endpoint, params: dict[str, str], scope: str, what: str) -> None:
        realm = params.get("realm")
        if not realm or urllib.parse.urlsplit(realm).scheme not in ("http", "https"):
            raise AuthError(f"{what}: {ep.url} sent a bearer challenge without a usable realm")
        # One scope parameter per repository (distribution token spec), e.g. a mount's source.
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scope.split(" ")]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers: dict[str, str] = {}
        if ep.credentials:
            raw = f"{ep.credentials.username}:{ep.credentials.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        token_ep = Endpoint(serves=ep.serves, host=urllib.parse.urlsplit(realm).netloc,
                            scheme=urllib.parse.urlsplit(realm).scheme, verify=ep.verify, keep_alive=ep.keep_alive)
        resp = self._http(token_ep, "GET", url, headers, what=f"token for {what}")
        if resp.status_code in (401, 403):
            raise AuthError(f"{what}: the token service {token_ep.url} refused "
                            + (f"the credentials from {ep.credentials.source}" if ep.credentials else "anonymous access"),
                            hint="log in (docker login / podman login) or name usernameEnv/passwordEnv in the spec")
        if resp.status_code != 200:
            raise RegistryError(f"{what}: the token service {token_ep.url} answered HTTP {resp.status_code}")
        try:
            body = json.loads(self._read_capped(resp, MAX_MANIFEST_BYTES, what=f"token for {what}"))
            token = str(body.get("token") or body.get("access_token"))
        except (ValueError, AttributeError):
            raise RegistryError(f"{what}: the token service {token_ep.url} sent no JSON") from None
        finally:
            resp.close()
        with self._lock:
            self._tokens[(ep.url, scope)] = token

    def _read_capped(self, resp: Response, cap: int, *, what: str) -> bytes:
        out = bytearray()
        try:
            for chunk in resp.stream(CHUNK, decode=True):
                out += chunk
                if len(out) > cap:
                    raise RegistryError(f"{what}: larger than {cap} bytes")
        except TransportError as exc:
            raise RegistryError(f"{what}: connection failed while reading ({exc})") from None
        return bytes(out)

    def _redact(self, text: str, ep: Endpoint) -> str:
        secrets = [ep.credentials.password] if ep.credentials and ep.credentials.password else []
        with self._lock:
            secrets += [t for (url, _), t in self._tokens.items() if url == ep.url]
        for secret in secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(Authorization['\"]?:\s*['\"]?)(Basic|Bearer)\s+[^'\",\s]+", r"\1\2 ***", text)


class _Stream:
    """A request body of known length made of chunks: sent with Content-Length, not chunked."""

    def __init__(self, chunks: Iterator[bytes], length: int) -> None:
        self._chunks, self._length = chunks, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks


def _body(read: BlobReader, start: int, length: int) -> Body:
    """A fresh body for each attempt of a request: bytes [start, start + length) of a blob."""
    return lambda: _Stream(read(start, length), length) if length else b""


def _error_detail(resp: Response) -> str:
    """The registry's own words for an error (distribution-spec error codes), in at most 200 characters."""
    try:
        first = json.loads(next(resp.stream(8192, decode=True), b"")).get("errors")[0]  # the head only
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()[:200]
    except (ValueError, AttributeError, IndexError, TypeError, TransportError):
        return ""


def _literal_or_loopback(host: str) -> bool:
    """An IP address literal or a loopback name: a refusal there is final, there is no other address to try."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _strip_userinfo(url: str) -> str:
    """A URL without `user:password@` (never in messages)."""
    parts = urllib.parse.urlsplit(url)
    if not (parts.username or parts.password):
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _scope(repo: str, *, push: bool, mount_from: str | None = None) -> str:
    """The token scope a request needs (distribution token spec): pull, or pull and push, on `repo`; and
    pull on a mount's source."""
    scope = f"repository:{repo}:pull,push" if push else f"repository:{repo}:pull"
    return scope + (f" repository:{mount_from}:pull" if mount_from else "")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in re.findall(r'([A-Za-z]+)="([^"]*)"', rest)}


def _retry_after(value: str) -> float | None:
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_range_start(value: str) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    return int(match.group(1)) if match else None


def media_type_of(data: bytes, content_type: str, what: str) -> str:
    """The manifest's media type: its own `mediaType` field, else Content-Type, else its shape."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise RegistryError(f"manifest {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise RegistryError(f"manifest {what} is not a JSON object")
    declared = obj.get("mediaType") or content_type.split(";")[0].strip()
    if declared in INDEX_TYPES or declared in MANIFEST_TYPES:
        return str(declared)
    if obj.get("schemaVersion") == 1:
        raise RegistryError(f"manifest {what} is Docker schema 1, which is deprecated and not supported",
                            hint="push the image again with a current client")
    if "manifests" in obj:
        return OCI_INDEX
    if "layers" in obj and "config" in obj:
        return OCI_MANIFEST
    raise RegistryError(f"manifest {what} has unsupported media type {declared!r}")
