"""The command line: parse arguments, call the library, print, exit with the documented code.

Only this module prints. Library errors are `BundlerError`s: caught once in `main()`, printed as one
line on stderr (`airgap-bundle: error: ...`), and turned into `exit_code`; so is running out of file
descriptors, whatever raised it (`errors.TooManyOpenFilesError`, exit 11). `--verbose` re-raises them so
the traceback is there when a developer wants it. Exit codes are listed in the README.

Stage modules are imported inside the command that needs them: `verify` then never loads the
registry client (nothing that can open a connection), and `ref` starts in a tenth of a second.
"""

from __future__ import annotations

import atexit
import datetime
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .errors import (
    BundlerError,
    CheckFailedError,
    InputError,
    InvalidReferenceError,
    LockMismatchError,
    TooManyOpenFilesError,
    UnvendoredImageError,
    UsageError,
)
from .reference import ImageRef

if TYPE_CHECKING:
    from .lock import Lock
    from .pipeline import LockOutcome
    from .spec import ChartSource, Spec


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled, a container stopped), raised in the main thread like Ctrl-C, so the
    same unwinding runs: every output being written under a temporary name is removed, push says what
    is already in place. The default action would end the process where it stands, temporary files
    and all."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _reported(exc: Exception) -> BundlerError | None:
    """The error the CLI reports for `exc`, or None for a bug (its traceback is shown). Running out of file
    descriptors is reported whatever raised it, a plain OSError included: any open can hit it, even one
    by a module Python imports late, and no wrapper names the limit as the fix."""
    return TooManyOpenFilesError.from_error(exc) or (exc if isinstance(exc, BundlerError) else None)


class _Group(click.Group):
    """Turns BundlerError (and running out of file descriptors) into one line and its exit code; usage errors
    exit 2 (click's own); Ctrl-C and SIGTERM into one line and 130 or 143 (128 + the signal's number, as a
    shell reports it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (BundlerError, OSError) as exc:
            error = _reported(exc)
            if error is None or (ctx.obj and ctx.obj.get("verbose")):
                raise
            click.echo(f"airgap-bundle: error: {error}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt as exc:
            number = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
            click.echo(f"airgap-bundle: stopped by {number.name}; no output was left half-written (each is "
                       "written under a temporary name and renamed when complete); run the command again", err=True)
            ctx.exit(128 + number)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="airgap-bundle")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Build signed, multi-architecture bundles for air-gapped Kubernetes clusters.

    \b
    Examples (the typical flow; scripts/demo.sh runs it end to end on a local registry):
      airgap-bundle sweep bundle.yaml --fail-on-unvendored   # CI: every image accounted for
      airgap-bundle build bundle.yaml --output app.bundle.tar --key vendor.key --cert vendor.crt
      airgap-bundle sign app.bundle.tar --authority customer --key customer.key
      airgap-bundle verify app.bundle.tar --policy policy.yaml --extract ./out

    Each command's --help has its own examples. Exit codes: README.md ("Exit codes"); the guides
    for release engineers, CI, vendors and customers: docs/ (README.md links each page).
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


# --- ref ---------------------------------------------------------------------------------------

@cli.command("ref", short_help="Parse and normalise image references.")
@click.argument("refs", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def ref_command(refs: tuple[str, ...], as_json: bool) -> None:
    """Parse and normalise image references as the container runtimes do.

    \b
    Prints, for each REF: normalized (docker.io/library/nginx), canonical (what a runtime pulls, with
    :latest when there is neither tag nor digest), domain, path, tag, digest; or the error.
    Exit 0 when every REF is valid, 1 otherwise.

    \b
    Example:
      airgap-bundle ref --json nginx quay.io/prometheus/node-exporter:v1.8.2
    """
    all_valid = True
    for text in refs:
        try:
            parsed = ImageRef.parse(text)
        except InvalidReferenceError as exc:
            all_valid = False
            row: dict[str, Any] = {"input": text, "valid": False, "error": exc.message}
        else:
            row = {
                "input": text, "valid": True, "normalized": str(parsed), "canonical": parsed.canonical,
                "domain": parsed.domain, "path": parsed.path, "tag": parsed.tag, "digest": parsed.digest,
            }
        if as_json:
            click.echo(json.dumps(row, sort_keys=False))
        elif row["valid"]:
            click.echo(f"{text}\t{row['canonical']}")
        else:
            click.echo(f"{text}\tinvalid: {row['error']}")
    if not all_valid:
        sys.exit(1)


# --- keys, sign, verify (trust) -----------------------------------------------------------------
# Keys and signing: bundler/keys.py, bundler/sign.py, bundler/archive.py; verification: bundler/verify.py.


def _key_password(*, confirm: bool = False) -> bytes:
    """The private-key password: $AIRGAP_BUNDLE_KEY_PASSWORD, else a prompt (never a flag)."""
    from .keys import PASSWORD_ENV

    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env.encode()
    if not sys.stdin.isatty():
        raise InputError("the private key needs a password and there is no terminal to ask for it",
                         hint=f"set {PASSWORD_ENV}")
    return str(click.prompt("Private key password", hide_input=True, confirmation_prompt=confirm)).encode()


@cli.group("keys", short_help="Make signing keys and certificates.")
def keys_group() -> None:
    """Make signing keys and certificates (docs/vendor.md).

    \b
    Example: the recommended set-up, a vendor root CA kept offline that issues short-lived
    signing certificates:
      airgap-bundle keys generate --out vendor-root --ca --cert --valid-days 3650
      airgap-bundle keys generate --out signing --cert --ca-key vendor-root.key \\
          --ca-cert vendor-root.crt --valid-days 30
    Customers trust vendor-root.crt in their verification policy.
    """


@keys_group.command("generate", short_help="Generate a key pair and, optionally, a certificate.")
@click.option("--out", "prefix", required=True, type=click.Path(dir_okay=False),
              help="Write PREFIX.key (private), PREFIX.pub and, with --cert, PREFIX.crt.")
@click.option("--type", "kind", type=click.Choice(["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096"]),
              default="ecdsa-p256", show_default=True, help="Key algorithm.")
@click.option("--cert", "make_cert", is_flag=True, help="Also make an X.509 certificate for the key.")
@click.option("--ca", "is_ca", is_flag=True, help="The certificate is a CA that issues signing certificates.")
@click.option("--path-length", type=click.IntRange(0, 8), default=0, show_default=True,
              help="With --ca: how many intermediate CAs may sit below it (1 for a root that issues one).")
@click.option("--ca-key", type=click.Path(exists=True, dir_okay=False), help="Issue the certificate with this CA key.")
@click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), help="The CA certificate (with --ca-key).")
@click.option("--not-after", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"]),
              help="End of the certificate's validity (UTC).")
@click.option("--valid-days", type=click.IntRange(1, 36500), default=30, show_default=True,
              help="Validity from now when --not-after is not given.")
@click.option("--subject", "common_name", help="Certificate common name (default: the file name).")
@click.option("--encrypt", is_flag=True, help="Encrypt the private key (password from the environment or a prompt).")
@click.option("--cosign", "cosign_format", is_flag=True,
              help="Write the private key as cosign's ENCRYPTED SIGSTORE PRIVATE KEY (implies --encrypt).")
def keys_generate_command(prefix: str, kind: str, make_cert: bool, is_ca: bool, path_length: int,
                          ca_key: str | None, ca_cert: str | None, not_after: datetime.datetime | None,
                          valid_days: int, common_name: str | None, encrypt: bool, cosign_format: bool) -> None:
    """Generate a key pair and, optionally, a certificate (self-signed or issued by a CA key).

    \b
    Example: a vendor root, an intermediate CA, and a signing certificate it issues:
      airgap-bundle keys generate --out root --ca --path-length 1 --valid-days 3650
      airgap-bundle keys generate --out issuing --ca --ca-key root.key --ca-cert root.crt --valid-days 730
      airgap-bundle keys generate --out signing --ca-key issuing.key --ca-cert issuing.crt --valid-days 30
    signing.crt then holds the signing certificate followed by issuing.crt (never the root): `sign
    --cert signing.crt` carries that chain, and the policy names root.crt only.

    \b
    Example: a customer's co-signing key (a pinned public key is enough for a policy):
      airgap-bundle keys generate --out customer --type ed25519 --encrypt
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from . import keys

    if (ca_key is None) != (ca_cert is None):
        raise UsageError("--ca-key and --ca-cert go together")
    if (ca_key or is_ca or not_after) and not make_cert:
        make_cert = True
    base = Path(prefix)
    password = _key_password(confirm=True) if (encrypt or cosign_format) else None
    private_key = keys.generate_private_key(kind)
    cert = None
    if make_cert:
        now = datetime.datetime.now(datetime.UTC)
        end = (not_after.replace(tzinfo=datetime.UTC) if not_after
               else now + datetime.timedelta(days=valid_days))
        issuer_chain: tuple[x509.Certificate, ...] = ()
        if ca_key and ca_cert:
            issuer_key = keys.load_private_key(Path(ca_key).read_bytes(), source=ca_key, password=_key_password)
            issuer_cert, *above = keys.load_certificates(Path(ca_cert))
            # An intermediate issuer: the new certificate's file carries it (and what is above it, no root).
            issuer_chain = () if keys.is_self_signed(issuer_cert) else (issuer_cert, *above)
        else:
            issuer_key, issuer_cert = private_key, None
        cert = keys.issue_certificate(private_key.public_key(), common_name=common_name or base.name,
                                      not_after=end, issuer_key=issuer_key, issuer_cert=issuer_cert, ca=is_ca,
                                      path_length=path_length)
    keys.write_new_file(base.with_name(base.name + ".key"),
                        keys.private_key_pem(private_key, password, cosign=cosign_format), mode=0o600)
    keys.write_new_file(base.with_name(base.name + ".pub"), keys.public_pem(private_key.public_key()))
    if cert is not None:
        keys.write_new_file(base.with_name(base.name + ".crt"), b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (cert, *issuer_chain)))
    click.echo(f"key {base.name}.key ({kind}) fingerprint {keys.fingerprint(private_key.public_key())}")
    if cert is not None:
        click.echo(f"certificate {base.name}.crt serial {cert.serial_number:x} notAfter "
                   f"{cert.not_valid_after_utc.isoformat()}{' (CA)' if is_ca else ''}")


@cli.command("sign", short_help="Co-sign or re-sign a bundle.")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--authority", required=True, help="Who signs: vendor, customer, integrator-NAME, ...")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Private key (PKCS#8 PEM, encrypted or not, or a cosign key file).")
@click.option("--cert", "cert_path", type=click.Path(exists=True, dir_okay=False),
              help="The signing certificate for the key (recommended: it carries notAfter).")
@click.option("--replace", is_flag=True, help="Replace this authority's existing signature (re-signing).")
def sign_command(bundle: str, authority: str, key_path: str, cert_path: str | None, replace: bool) -> None:
    """Co-sign a bundle: append signatures/AUTHORITY.sigstore.json; payload bytes never change.

    A second signature by the same authority is refused (exit 11) unless --replace is given: that
    re-signs, for example with a renewed certificate, and keeps every other signature. Key password:
    $AIRGAP_BUNDLE_KEY_PASSWORD, else a prompt. Keys and certificates: docs/vendor.md.

    \b
    Examples (app.bundle.tar from `build`, keys from `keys generate`):
      airgap-bundle sign app.bundle.tar --authority customer --key customer.key
      airgap-bundle sign app.bundle.tar --authority vendor --key signing.key --cert signing.crt --replace
    """
    from . import archive, keys, sign

    signer = keys.load_signer(key_path, cert_path=cert_path, password=_key_password)
    statement = archive.read_statement(bundle)
    archive.append_signature(bundle, authority, sign.sign(statement, signer, authority), replace=replace)
    click.echo(f"signed {bundle} as {authority} with {signer.fingerprint}"
               + (f" (certificate serial {signer.certificate.serial_number:x})" if signer.certificate else ""))


@cli.command("verify", short_help="Verify a bundle offline; optionally extract it.")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--policy", required=True, type=click.Path(dir_okay=False),
              help="Verification policy YAML: authorities, which are required, their roots or keys.")
@click.option("--extract", "extract_to", type=click.Path(file_okay=False),
              help="After every check passed, extract into this new folder.")
@click.option("--audit-log", "audit_log", type=click.Path(dir_okay=False),
              help="With --extract: also append the verification record to this JSON Lines log (never truncated).")
@click.option("--at", "at_time", metavar="TIME",
              help="Audit a stored bundle: check validity at TIME (RFC 3339) instead of now. Not with --extract.")
@click.option("--base", "base", type=click.Path(dir_okay=False),
              help="BUNDLE is an update: its base, the full bundle it was built against (verified too; a file or "
                   "a split bundle's NAME.parts.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_command(bundle: str, policy: str, extract_to: str | None, audit_log: str | None, at_time: str | None,
                   base: str | None, as_json: bool) -> None:
    """Verify a bundle offline: signatures against the policy, then every member; optionally extract.

    Nothing is written unless every check passed. With --extract, the folder also gets
    .airgap-bundle/verification.json: the bundle's sha256, the policy's, and every accepted key
    (docs/inspect-and-audit.md). Exit codes 20-29 name the rejection (README.md "Exit codes").

    \b
    The policy (paths relative to it; docs/customer-runbook.md "Verifying a bundle"):
      apiVersion: airgap-bundle.dev/v1
      kind: VerificationPolicy
      authorities:
        - name: vendor               # always required
          roots: [vendor-root.crt]   # CA certificates that issue the vendor's signing certificates
        - name: customer
          required: true
          keys:                      # pinned public keys, with an optional end of validity
            - path: customer.pub
              notAfter: 2027-01-01T00:00:00Z

    \b
    Examples:
      airgap-bundle verify app.bundle.tar --policy policy.yaml
      airgap-bundle verify app.bundle.tar --policy policy.yaml --extract ./app --audit-log audit.jsonl
      airgap-bundle verify app.bundle.tar --policy policy.yaml --at 2027-03-01T00:00:00Z   # an audit
      airgap-bundle verify app.bundle.tar.parts.json --policy policy.yaml --extract ./app   # a split bundle
      airgap-bundle verify app-1.1.bundle.tar --base app-1.0.bundle.tar --policy policy.yaml --extract ./app

    \b
    BUNDLE may be a split bundle's parts index (NAME.parts.json from `split`): its signature is checked
    first, then each part's size, then the parts are verified as one bundle, read in place; a missing,
    short or damaged part is named (exit 31).

    \b
    An update bundle (build --base) is verified only with its base (exit 28 without it, or with
    another base): both are verified, and --extract writes the full bundle's tree.
    """
    from . import audit, keys, parts, update, verify

    if at_time and extract_to:
        raise UsageError("--at checks validity at another time, for audits; --extract delivers, which requires "
                         "validity now", hint="drop --at to extract, or --extract to audit")
    if audit_log and not extract_to:
        raise UsageError("--audit-log records an extraction: give --extract too")
    trust = keys.load_trust(policy)
    now = keys.parse_time(at_time, "--at") if at_time else datetime.datetime.now(datetime.UTC)
    when = f"validity checked at {now.isoformat()} (--at: an audit, not an acceptance for delivery)"
    if at_time and not as_json:
        click.echo(when)
    records: list[audit.VerificationRecord] = []

    def record(result: verify.VerificationResult) -> dict[str, bytes]:
        records.append(audit.record_for(result, policy=trust, action="extract", now=now,
                                        destination=str(Path(extract_to or ".").absolute())))
        return {audit.RECORD_PATH: records[0].to_bytes()}

    try:
        if audit_log:
            audit.check_log(Path(audit_log))  # fail before extracting, not after
        with parts.open_bundle(bundle, trust, now) as source, parts.open_optional(base, trust, now) as base_source:
            _echo_parts(source, err=as_json)  # a file, or a split bundle's parts (the base may be split too)
            parts_json = source.checked.to_json() if isinstance(source, parts.PartsFile) else None
            if extract_to and base_source:
                result = update.verify_pair_and_extract(source, base_source, trust, extract_to, now=now, extra=record)
            elif extract_to:
                result = verify.verify_and_extract(source, trust, extract_to, now=now, extra=record)
            elif base_source:
                with update.open_pair(source, base_source, trust, now=now) as pair:
                    result = pair.update
            else:
                result = verify.require(verify.verify(source, trust, now=now))
        if audit_log:
            audit.append_log(records[0], Path(audit_log))
    except (BundlerError, OSError) as exc:
        failure = _reported(exc)
        if as_json and failure is not None:
            click.echo(json.dumps({"ok": False, "failure": {"error": type(failure).__name__,
                                                            "exitCode": failure.exit_code, "message": str(failure)}}))
        raise
    if as_json:
        click.echo(json.dumps({**result.to_json(), "base": _base_json(result.bom and result.bom.base, base),
                               **({"parts": parts_json} if parts_json else {}),
                               "extractedTo": extract_to, "validAt": now.isoformat(),
                               "validAtGiven": bool(at_time), "record": records[0].to_json() if records else None,
                               "auditLog": audit_log}, indent=2))
        return
    _echo_verified(bundle, result, extract_to=extract_to, note=when if at_time else None)
    if base:
        click.echo(_base_line(result, base))
    if extract_to:
        click.echo(f"verification record: {Path(extract_to) / audit.RECORD_PATH}"
                   + (f", appended to {audit_log}" if audit_log else ""))


def _echo_parts(source: Any, *, err: bool = False) -> None:
    """For a split bundle: which index, how many parts, and who signed the index."""
    from . import parts

    if isinstance(source, parts.PartsFile):
        checked = source.checked
        signer = checked.signer
        by = f"signed by {signer.authority} key {signer.keyid}" if signer else "signature NOT verified (no policy)"
        click.echo(f"parts: {len(checked.index.parts)} parts of {checked.index.bundle} "
                   f"({checked.index.size:,} bytes), index {by}", err=err)


def _base_json(named: Any, path: str | None) -> dict[str, Any] | None:
    """An update's `predicate.base` (a bom.BaseEntry, or None for a full bundle) as build, verify and push
    report it."""
    if named is None:
        return None
    return {"path": path, "statementDigest": named.statement_digest, "name": named.name, "version": named.version,
            "blobsFromBase": len(named.files), "bytesFromBase": sum(f.size for f in named.files)}


def _base_line(result: Any, base: str) -> str:
    b = _base_json(result.bom.base, base)
    assert b is not None  # open_pair refuses a full bundle given a base
    return (f"base ok: {base} is {b['name']} {b['version']} (statement {b['statementDigest']}), verified; it holds "
            f"the {b['blobsFromBase']} image blob(s) ({b['bytesFromBase']:,} bytes) the update takes from it")


def _echo_verified(bundle: str, result: Any, *, extract_to: str | None = None, note: str | None = None,
                   err: bool = False) -> None:
    """The accepted signatures (authority, key fingerprint, serial, notAfter) and the member check."""
    for a in result.authorities:
        if a.ok:
            extra = f" certificate serial {a.serial} notAfter {a.not_after.isoformat()}" if a.serial and a.not_after else (
                f" notAfter {a.not_after.isoformat()}" if a.not_after else "")
            click.echo(f"signature ok: {a.authority} key {a.keyid}{extra}", err=err)
        else:
            click.echo(f"signature skipped: {a.authority}: {a.reason}", err=err)
    click.echo(f"verified {bundle} (sha256:{result.bundle_sha256}): {result.members_checked} members match "
               f"statement sha256:{result.statement_sha256}" + (f"; extracted to {extract_to}" if extract_to else "")
               + (f"; {note}" if note else ""), err=err)

# --- inspect (issue 10) -------------------------------------------------------------------------


@cli.command("inspect", short_help="Show what a bundle holds and who signed it.")
@click.argument("bundle", required=False, type=click.Path(dir_okay=False))
@click.option("--policy", type=click.Path(dir_okay=False),
              help="Also judge the signatures against this policy, exactly as verify does (members are not hashed).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False),
              help="Instead of a bundle, read verification records: a .airgap-bundle/verification.json or an "
                   "audit log.")
@click.option("--image", "image", metavar="DIGEST|REF",
              help="With --record: only records whose bundle carried this image (answers: which key signed it?).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schemas/inspection.schema.json; records: "
                                                      "schemas/verification-record.schema.json).")
def inspect_command(bundle: str | None, policy: str | None, record_path: str | None, image: str | None,
                    as_json: bool) -> None:
    """Show what a bundle holds and who signed it, without extracting it; or read verification records.

    \b
    Reads only the tar headers (verify's hostile-input scan), the statement and the signature files.
    Without --policy the signatures are parsed, not verified, and the report says so; with --policy
    they are judged as verify judges them, the report is printed, and a rejection exits with verify's
    code (21-29). Member contents are never hashed: verify does that. Exit 11/12 for a truncated or
    hostile file, 29 for a malformed statement, 26 when the statement does not list the members.

    \b
    Examples:
      airgap-bundle inspect app.bundle.tar
      airgap-bundle inspect app.bundle.tar --policy policy.yaml --json > ticket.json
      airgap-bundle inspect --record ~/.local/state/airgap-bundle/audit.jsonl --image sha256:3b1f...
      airgap-bundle inspect app.bundle.tar.parts.json --policy policy.yaml   # a split bundle
    """
    from . import audit, keys, parts
    from . import inspect as inspect_mod

    if record_path is not None:
        if bundle is not None or policy is not None:
            raise UsageError("--record reads records only: give no BUNDLE and no --policy with it")
        records = audit.read_records(Path(record_path))
        if image is not None:
            records = [r for r in records if r.names_image(image)]
            if not records:
                raise CheckFailedError(f"{record_path}: no record names image {image}",
                                       hint="no bundle recorded there carried it: it was not loaded by verify or push")
        if as_json:
            click.echo(json.dumps({"records": [r.to_json() for r in records]}, indent=2))
        else:
            click.echo("\n".join(r.to_text() for r in records), nl=False)
        return
    if bundle is None:
        raise UsageError("give a BUNDLE to inspect, or --record PATH")
    if image is not None:
        raise UsageError("--image filters records: use it with --record")
    trust = keys.load_trust(policy) if policy else None
    now = datetime.datetime.now(datetime.UTC)
    with parts.open_bundle(bundle, trust, now) as source:  # a file, or a split bundle's parts
        result = inspect_mod.inspect(source, trust=trust, now=now)
        if as_json:
            doc = result.to_json()
            if isinstance(source, parts.PartsFile):
                doc["parts"] = source.checked.to_json()
            click.echo(json.dumps(doc, indent=2))
        else:
            _echo_parts(source)
            click.echo(inspect_mod.render_text(result), nl=False)
        if result.failure is not None:
            raise result.failure

# --- sweep -------------------------------------------------------------------------------------

@cli.command("sweep", short_help="Find every image a deployment pulls, with evidence.")
@click.argument("spec_file", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
@click.option("--chart", "chart", metavar="PATH", help="A Helm chart (directory or .tgz) to render.")
@click.option("--values", "values", metavar="F", multiple=True, help="Values file for --chart (repeatable).")
@click.option("--set", "sets", metavar="K=V", multiple=True, help="helm --set for --chart (repeatable).")
@click.option("--release", metavar="NAME", help="Release name for --chart (default: the chart's folder).")
@click.option("--namespace", metavar="NS", help="Namespace for --chart.")
@click.option("--kube-version", metavar="V", help="helm template --kube-version for --chart.")
@click.option("--kustomize", "kustomize", metavar="DIR", multiple=True, help="A kustomization directory.")
@click.option("--manifests", "manifests", metavar="PATH|-", multiple=True,
              help="Manifest file, directory (recursive), glob, or - for standard input.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "junit", "github"]),
              default="text", show_default=True, help="Report format (on stdout).")
@click.option("--why", "why", metavar="REF", help="Show every place REF comes from, and nothing else.")
@click.option("--fail-on-unvendored", is_flag=True, help="Exit 1 when an image is not vendored (see below).")
@click.option("--vendored", "vendored_file", metavar="FILE", type=click.Path(dir_okay=False),
              help="The images a bundle carries: one reference per line, a JSON list, or an OCI index.json.")
@click.option("--local-registry", metavar="HOST", help="Vendored = already points at HOST (or HOST/prefix).")
@click.option("--emit-images", is_flag=True,
              help="Print the images: entries that resolve every unreviewed candidate, as YAML to paste into SPEC.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
              help="Cache for the SPEC's charts by reference [default: $XDG_CACHE_HOME/airgap-bundle].")
@click.option("--offline", is_flag=True, help="Take the SPEC's charts by reference from the cache alone.")
def sweep_command(spec_file: str | None, chart: str | None, values: tuple[str, ...], sets: tuple[str, ...],
                  release: str | None, namespace: str | None, kube_version: str | None,
                  kustomize: tuple[str, ...], manifests: tuple[str, ...], fmt: str, why: str | None,
                  fail_on_unvendored: bool, vendored_file: str | None, local_registry: str | None,
                  emit_images: bool, cache_dir: str | None, offline: bool) -> None:
    """Find every image the charts, Kustomize bases and manifests make a cluster pull.

    \b
    Sources: the SPEC's charts, kustomize and manifests, plus any given here. Each image is reported
    with every place it is named (file:line, chart and template, kind/namespace/name, field path),
    as "definite" (image fields, Crossplane packages, OLM relatedImages, helm.sh/images, extraImages)
    or "candidate" (found in args, env or custom-resource fields by pattern; confirm or exclude it
    in the SPEC's images: list). Summary lines go to stderr, the report to stdout.

    \b
    Vendored check (what --fail-on-unvendored fails on):
      --local-registry HOST   vendored = the reference already points at HOST. Typical in CI on the
                              rewritten manifests: anything still pointing elsewhere fails.
      --vendored FILE         vendored = listed in FILE (a bundle's image list, or its OCI index.json).
      SPEC alone              vendored = what a bundle built from SPEC carries: definite images and
                              confirmed candidates. Images the SPEC excludes are reported with their
                              reason, never checked.
    Candidates are checked like definite images: a heuristic hit is never silently let through. With a
    SPEC (and neither --vendored nor --local-registry), a candidate the SPEC neither confirms nor
    excludes is unresolved: the sweep fails (exit 1, "passed": false) until it is reviewed, with or
    without --fail-on-unvendored. --emit-images prints the images: entries to paste (confirm: true, the
    evidence as comments; change an entry to exclude: <reason> where the value is not an image).

    \b
    Exit codes: 0 all vendored (or no check asked), 1 unvendored images, unresolved candidates or
    invalid references, 2 bad input or usage, 3 helm or kustomize failed, 15 helm or kubectl missing.

    \b
    Examples (docs/ci.md has a GitHub Actions job):
      airgap-bundle sweep examples/bundle.yaml                     # in a clone of this repository
      airgap-bundle sweep bundle.yaml --fail-on-unvendored --format sarif > sweep.sarif
      airgap-bundle sweep --chart ./chart --values prod.yaml --format json
      airgap-bundle sweep --manifests out/manifests --fail-on-unvendored --local-registry registry.local:5000
      helm template x ./chart | airgap-bundle sweep --manifests - --why nginx
      airgap-bundle sweep bundle.yaml --emit-images >> bundle.yaml   # when bundle.yaml has no images: yet
    """

    from . import render as render_mod
    from . import report as report_mod
    from . import spec as spec_mod
    from . import sweep as sweep_mod

    if vendored_file and local_registry:
        raise UsageError("--vendored and --local-registry are exclusive", hint="give one of them")
    if emit_images and (spec_file is None or why or fmt != "text" or vendored_file or local_registry):
        raise UsageError("--emit-images needs a SPEC and prints YAML for it",
                         hint="give a SPEC, without --why, --format, --vendored or --local-registry")
    if (values or sets or release or namespace or kube_version) and not chart:
        raise UsageError("--values, --set, --release, --namespace and --kube-version need --chart")
    spec = spec_mod.load(spec_file) if spec_file else None
    locked = _lock_of(spec)
    charts = _local_charts(spec, cache_dir, offline, locked) if spec else []
    if chart:
        chart_path = Path(chart)
        charts.append(spec_mod.ChartSource(
            path=chart_path, release=release or chart_path.resolve().name.removesuffix(".tgz"),
            namespace=namespace, values=tuple(Path(v) for v in values), set=sets, kube_version=kube_version))
    sources = render_mod.Sources(
        charts=tuple(charts),
        kustomize=tuple(spec.kustomize if spec else ()) + tuple(Path(k) for k in kustomize),
        manifests=tuple(spec.manifests if spec else ()) + manifests,
    )
    if not (sources.charts or sources.kustomize or sources.manifests):
        raise UsageError("nothing to sweep", hint="give a SPEC, --chart, --kustomize or --manifests")
    # Fail closed on remote bases before kubectl could fetch them: no network call nobody configured.
    from .relocate import closure
    for directory in sources.kustomize:
        closure(Path(directory))
    stdin_text = sys.stdin.read() if "-" in sources.manifests else None
    docs = render_mod.render(sources, stdin_text=stdin_text)
    chart_images = [entry for c in sources.charts for entry in render_mod.chart_images(Path(c.path))]
    result = sweep_mod.sweep(
        docs, chart_images=chart_images,
        extra_images=spec.extra_images if spec else (), options=spec.images if spec else (),
        spec_file=render_mod.display(spec.path) if spec else "bundle.yaml",
        catalogue=spec.catalogue if spec else None,
        review=spec is not None and not (vendored_file or local_registry))
    if emit_images:
        assert spec is not None  # checked with the options above
        click.echo(report_mod.to_images_yaml(result, render_mod.display(spec.path),
                                             has_images_key="images" in spec.document), nl=False)
        click.echo(f"airgap-bundle sweep: {report_mod.summary_line(result, {})}", err=True)
        return

    check: sweep_mod.VendoredCheck | None = None
    check_name = "none"
    if local_registry:
        check, check_name = sweep_mod.at_registry(local_registry), "local-registry"
    elif vendored_file:
        try:
            text = Path(vendored_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{vendored_file}: cannot read the vendored list: {exc}") from None
        refs, digests = report_mod.parse_vendored(text, vendored_file)
        check, check_name = sweep_mod.in_list(refs, digests), "vendored-list"
    elif fail_on_unvendored:
        if spec is None:
            raise UsageError("--fail-on-unvendored needs something to check against",
                             hint="give a SPEC, --vendored FILE or --local-registry HOST")
        check, check_name = sweep_mod.carried, "spec"
    status = sweep_mod.vendored_status(result, check)

    if why:
        query = ImageRef.parse(why)
        everything = (*result.images, *(s.image for s in result.skipped))
        chosen = [i for i in everything if sweep_mod.matches(query, i.ref)]
        if not chosen:
            raise CheckFailedError(f"{why}: no document, chart annotation or spec entry names this image")
        out = report_mod.to_json(result, status, check_name, chosen) if fmt == "json" else \
            report_mod.to_text(result, status, check_name, chosen)
        click.echo(out, nl=False)
        return

    click.echo(report_mod.render_report(fmt, result, status, check_name, __version__), nl=False)
    click.echo(f"airgap-bundle sweep: {report_mod.summary_line(result, status)}", err=True)
    unvendored = [str(ref) for ref, ok in status.items() if ok is False]
    if unvendored and fail_on_unvendored:
        raise UnvendoredImageError(f"{len(unvendored)} image(s) not vendored: {', '.join(unvendored[:5])}"
                                   + (" ..." if len(unvendored) > 5 else ""),
                                   hint="vendor them, confirm candidates or exclude them in the spec")
    if result.invalid:
        first = result.invalid[0]
        raise CheckFailedError(f"{first.origin.file}:{first.line}: {len(result.invalid)} invalid image "
                               f"reference(s), first {first.written!r}: {first.error}")
    if result.review:
        sweep_mod.require_reviewed(result, spec_file or "SPEC")

    if spec is not None and locked is not None and not (chart or kustomize or manifests):
        # `sweep SPEC` in CI: the images and charts SPEC carries must be the locked ones.
        from . import lock as lockfile
        from . import pipeline

        lockfile.require_agrees(locked, pipeline.wanted(spec, result))
        click.echo(f"airgap-bundle sweep: {locked.name} agrees with the spec", err=True)


def _lock_of(spec: Spec | None) -> Lock | None:
    """SPEC's lock, when it has one (its charts are then fetched at the locked versions)."""
    from . import lock as lockfile

    path = lockfile.path_for(spec.path) if spec else None
    return lockfile.load(path) if path is not None and path.exists() else None

# --- end sweep ---------------------------------------------------------------------------------

# --- crossplane (the Crossplane gate) ---------------------------------------------------------------


@cli.group("crossplane", short_help="Check Crossplane packages and Compositions.")
def crossplane_group() -> None:
    """Crossplane packages and Compositions: the gate that fails closed (docs/crossplane.md).

    \b
    Example: a spec's Crossplane packages and plain manifests (a spec with charts: render them first,
    or run build, which runs the gate itself):
      airgap-bundle crossplane check bundle.yaml --format json
    """


@crossplane_group.command("check", short_help="Check against a target Crossplane version.")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))  # a missing file: our own one-line error
@click.option("--target", "target_text", metavar="VERSION",
              help="Crossplane version the bundle is for (2.0, v2.0.0, 1.20). Default: the spec's, else 2.0.")
@click.option("--package", "package_args", multiple=True, metavar="REF=PATH|PATH",
              help="A bundled package: a dir or package.yaml, a .xpkg file, or an OCI layout; REF= says which "
                   "reference it stands for (registry/org/name:version). Repeatable.")
@click.option("--image", "images", multiple=True, metavar="REF",
              help="An image the bundle carries (for packages that name a controller image). Repeatable.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def crossplane_check_command(inputs: tuple[Path, ...], target_text: str | None, package_args: tuple[str, ...],
                             images: tuple[str, ...], fmt: str) -> None:
    """Check Crossplane objects and packages against a target Crossplane version.

    \b
    INPUTS is a bundle spec (its crossplane: target, packages and waivers, and its manifests) or
    rendered manifest files and directories. Exit 0 on pass, 1 on fail (any error finding), 2 on bad input.

    \b
    Examples (the rules: docs/crossplane.md). Two packages of this repository's test fixtures, run
    in a clone; then a render of your own with your built package in ./provider-aws-s3:
      airgap-bundle crossplane check --target 2.0 \\
        --package xpkg.upbound.io/upbound/provider-family-aws:v2.0.0=tests/fixtures/crossplane/packages/provider-family-aws-v2.0.0 \\
        --package xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0=tests/fixtures/crossplane/packages/provider-aws-s3-v2.0.0
      helm template x ./chart > rendered.yaml
      airgap-bundle crossplane check --target 2.0 \\
        --package xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0=./provider-aws-s3 rendered.yaml
    """
    from . import crossplane
    from .spec import load as load_spec
    from .xpkg import read_package

    if not inputs and not package_args:  # an empty glob in CI must not pass as "nothing wrong"
        raise UsageError("nothing to check", hint="give a bundle spec, rendered manifests or --package")
    waivers: tuple[crossplane.Waiver, ...] = ()
    packages = []
    spec_target = None
    manifests = list(inputs)
    if len(inputs) == 1 and crossplane.is_spec_file(inputs[0]):
        spec = load_spec(inputs[0])
        spec_target = spec.crossplane.target
        waivers = crossplane.waivers_from_spec(spec.crossplane)
        packages.extend(crossplane.packages_from_spec(spec.crossplane))
        docs = crossplane.manifests_from_spec(spec)
    else:
        docs = crossplane.load_manifests(manifests)
    packages.extend(read_package(arg) for arg in package_args)
    target = crossplane.Target.parse(target_text or spec_target or "2.0")
    report = crossplane.check(docs, packages, target=target, waivers=waivers, images=images)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        for f in report.findings:
            where = f"{f.file}:{f.line}" if f.file and f.line else (f.file or "-")
            detail = " ".join(x for x in (f.resource, f.path) if x)
            click.echo(f"{where}: {f.severity} {f.rule}: {f.message}" + (f" [{detail}]" if detail else ""))
        counts = {s: sum(1 for f in report.findings if f.severity == s) for s in ("error", "warn", "info")}
        click.echo(f"crossplane check (target {report.target}): {report.verdict}: {counts['error']} error(s), "
                   f"{counts['warn']} warning(s), {counts['info']} info")
    if report.verdict != "pass":
        sys.exit(1)

# --- end crossplane -----------------------------------------------------------------------------------
# --- pull (issue 3) ----------------------------------------------------------------------------

class _Progress:
    """Draws progress: a live byte/blob line on a terminal, plain log lines otherwise; one line per
    finished stage (render, sweep, crossplane, rewrite, attest, archive) either way."""

    def __init__(self, tty: bool, label: str = "pull") -> None:
        import threading
        import time
        self.tty, self.label, self._time, self._lock = tty, label, time.monotonic, threading.Lock()
        self.start, self.bytes, self.last_draw = time.monotonic(), 0, 0.0
        self.blobs = (0, 0)

    def step(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        if stage == "blobs":
            self.blobs = (done, total or 0)
            self._draw()
        elif stage == "images" and not self.tty:
            click.echo(f"{self.label}: {done}/{total} {detail}", err=True)
        elif stage != "images" and total is not None and done == total:
            if self.tty and self.bytes:
                self._draw(final=True)
            click.echo(f"{stage}: {detail}", err=True)

    def transferred(self, nbytes: int) -> None:
        with self._lock:
            self.bytes += nbytes
        self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.tty:
            return
        now = self._time()
        if not final and now - self.last_draw < 0.2:
            return
        self.last_draw = now
        rate = self.bytes / max(now - self.start, 1e-6) / 1e6
        click.echo(f"\r{self.label}: blobs {self.blobs[0]}/{self.blobs[1]}  {self.bytes / 1e6:,.1f} MB  {rate:,.1f} MB/s  ",
                   err=True, nl=final)

    def finish(self) -> None:
        self._draw(final=True)


@cli.command("pull", short_help="Pull images, every platform, into a verified OCI layout.")
@click.argument("sources", nargs=-1, required=True, metavar="(SPEC | REF...)")
@click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False),
              help="OCI image layout folder to write (created if missing; existing blobs are re-verified).")
@click.option("--platform", "platform_texts", multiple=True, metavar="OS/ARCH[/VARIANT]",
              help="Required platform (repeat). Default: the spec's, else linux/amd64 and linux/arm64.")
@click.option("--jobs", "-j", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Concurrent blob downloads.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST",
              help="Use plain HTTP for this registry host (repeat). Never implied.")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True),
              help="CA bundle for registries without a caFile in the spec (wins over REQUESTS_CA_BUNDLE).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
              help="Cache layout consulted first [default: $XDG_CACHE_HOME/airgap-bundle].")
@click.option("--offline", is_flag=True, help="Use the cache only; fail naming what is missing.")
@click.option("--no-lock", is_flag=True,
              help="With SPEC: resolve every tag now, even those the lock beside SPEC (bundle.lock) pins.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document describing every image.")
def pull_command(sources: tuple[str, ...], output: str, platform_texts: tuple[str, ...], jobs: int,
                 insecure: tuple[str, ...], ca_file: str | None, cache_dir: str | None, offline: bool,
                 no_lock: bool, as_json: bool) -> None:
    """Pull images (every required platform) into an OCI image layout, verified and deduplicated.

    \b
    SPEC (a bundle.yaml): pulls its extraImages and the images: entries that name a tag or digest,
    from the registries (and mirrors) it lists; an image the lock beside SPEC (bundle.lock) pins is
    fetched by that digest, as `build` fetches it, so a warm run asks no registry anything. REF...:
    pulls those references, from their own registries only. Exit codes: 4 registry unreachable or
    refusing, 5 authentication, 6 not found, 7 digest mismatch, 8 missing platform, 9 --offline and not
    cached, 2 bad input
    (docs/release-engineer.md "pull").

    \b
    Examples:
      airgap-bundle pull --output ./images quay.io/prometheus/node-exporter:v1.8.2   # from quay.io
      airgap-bundle pull --output ./images --platform linux/amd64 --json bundle.yaml
      airgap-bundle pull --output ./images --offline quay.io/prometheus/node-exporter:v1.8.2   # cache only
    """
    from . import spec as spec_mod
    from .oci import DEFAULT_PLATFORMS, Platform
    from .pull import Sources, default_cache_dir, pull

    _log_to_stderr()
    first = Path(sources[0])
    pins = None
    if len(sources) == 1 and first.suffix in (".yaml", ".yml") and first.is_file():
        from . import lock as lock_mod

        spec = spec_mod.load(first)
        refs = [e.ref for e in spec.extra_images] + [str(o.ref) for o in spec.images
                                                     if not o.exclude and (o.ref.tag or o.ref.digest)]
        lock_path = lock_mod.path_for(first)
        if not no_lock and lock_path.exists():  # as build reads it: the locked digests, no tag resolved
            pins = lock_mod.pins(lock_mod.load(lock_path))
            pinned = sum(1 for r in refs if ImageRef.parse(r).canonical in pins)
            click.echo(f"pull: {pinned} of {len(refs)} image(s) by the digests {lock_path} pins "
                       "(the rest by tag; --no-lock resolves every tag)", err=True)
        srcs = Sources(registries=spec.registries, insecure_hosts=insecure,
                       ca_file=Path(ca_file) if ca_file else None)
        platforms = spec.platforms
        options_for = spec.options_for
    else:
        refs = list(sources)
        srcs = Sources.for_refs(refs, insecure_hosts=insecure, ca_file=Path(ca_file) if ca_file else None)
        platforms = DEFAULT_PLATFORMS
        options_for = lambda ref: None  # noqa: E731
    if platform_texts:
        platforms = tuple(Platform.parse(p) for p in platform_texts)
    progress = _Progress(sys.stderr.isatty())
    images = pull(refs, layout=Path(output), platforms=platforms, options_for=options_for, sources=srcs,
                  cache=Path(cache_dir) if cache_dir else default_cache_dir(), jobs=jobs, offline=offline,
                  progress=progress, pins=pins)
    progress.finish()
    if as_json:
        click.echo(json.dumps({"layout": str(Path(output)), "images": [{
            "source": i.source, "normalized": str(i.ref), "name": i.name, "mediaType": i.media_type,
            "upstreamDigest": i.upstream_digest, "bundledDigest": i.bundled_digest,
            "keepUpstreamIndex": i.keep_upstream_index,
            "platforms": [{"platform": str(p.platform), "digest": p.digest, "size": p.size} for p in i.platforms],
            "attestations": [{"digest": a.digest, "size": a.size} for a in i.attestations],
            "exempted": [{"platform": str(x.platform), "reason": x.reason} for x in i.exempted],
        } for i in images]}, indent=2))
    else:
        for i in images:
            click.echo(f"{i.source}\t{i.bundled_digest}\t{','.join(str(p.platform) for p in i.platforms)}")

# --- end pull ----------------------------------------------------------------------------------
# --- push (issue 10) ---------------------------------------------------------------------------


@cli.command("push", short_help="Verify a bundle, push its images, read them back.")
@click.argument("bundle", type=click.Path(dir_okay=False))
@click.option("--policy", required=True, type=click.Path(dir_okay=False),
              help="Verification policy YAML: the bundle is verified with it first, exactly as `verify` does.")
@click.option("--registry", "registry_host", metavar="HOST[:PORT]",
              help="Push here instead of the bundle's local registry (e.g. a port-forward); repository paths "
                   "and tags stay as they are.")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST",
              help="Plain HTTP for this registry host (repeat). Never implied.")
@click.option("--ca-file", type=click.Path(dir_okay=False, exists=True), help="CA bundle for the target registry.")
@click.option("--jobs", "-j", default=8, show_default=True, type=click.IntRange(1, 64), help="Concurrent uploads.")
@click.option("--chunk-size", "chunk_mib", default=0, show_default=True, type=click.IntRange(0, 4096), metavar="MiB",
              help="Upload blobs larger than this in chunks of this many MiB (0: one request per blob).")
@click.option("--dry-run", is_flag=True, help="Verify, then list what would be pushed and what is already there.")
@click.option("--audit-log", type=click.Path(dir_okay=False),
              help="Append the verification record to this JSON-lines file "
                   "[default: $XDG_STATE_HOME/airgap-bundle/audit.jsonl].")
@click.option("--base", "base", type=click.Path(dir_okay=False),
              help="BUNDLE is an update: its base, the full bundle it was built against (verified too; blobs the "
                   "update omits are read from it; a file or a split bundle's NAME.parts.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (progress lines go to stderr).")
def push_command(bundle: str, policy: str, registry_host: str | None, insecure: tuple[str, ...], ca_file: str | None,
                 jobs: int, chunk_mib: int, dry_run: bool, audit_log: str | None, base: str | None,
                 as_json: bool) -> None:
    """Verify a bundle, then push every image to the cluster-local registry and read it back.

    \b
    Nothing is sent unless the bundle passes every check of `verify` with POLICY. Images keep their
    repository paths and tags and their exact bytes (digests equal the bundle's); blobs stream out of
    the bundle file, skipped when the registry has them, mounted across repositories when it can.
    A run that stops midway says what is in place; the same command again resumes.
    Exit codes: 20-29 and 11-12 the bundle is not accepted; 4-7 the registry; 30 readback failed.
    BUNDLE may be a split bundle's parts index (NAME.parts.json): checked as verify checks it (a
    missing, short or damaged part: exit 31), then blobs stream out of the parts, across their edges.

    \b
    Examples (the registry must be running; the policy format: verify --help):
      airgap-bundle push app.bundle.tar --policy policy.yaml --dry-run
      airgap-bundle push app.bundle.tar.parts.json --policy policy.yaml   # a split bundle, read in place
      airgap-bundle push app.bundle.tar --policy policy.yaml --registry 127.0.0.1:5000 \\
          --insecure-registry 127.0.0.1:5000
      airgap-bundle push app-1.1.bundle.tar --base app-1.0.bundle.tar --policy policy.yaml --dry-run

    \b
    An update bundle (build --base) is pushed only with its base (exit 28 without it): both are
    verified, and each blob is read from whichever file holds it.
    """
    from . import audit, keys, parts
    from . import push as push_mod

    trust = keys.load_trust(policy)
    log_path = Path(audit_log) if audit_log else audit.default_audit_log()
    if not dry_run:
        audit.check_log(log_path)  # fail before anything is sent, not after an unrecorded push
    now = datetime.datetime.now(datetime.UTC)
    with parts.open_bundle(bundle, trust, now) as source, \
            parts.open_optional(base, trust, now) as base_source, \
            push_mod.open_verified(source, trust, now=now, base=base_source) as verified:
        _echo_parts(source, err=as_json)
        _echo_verified(bundle, verified.verification, err=as_json)
        if base:
            click.echo(_base_line(verified.verification, base), err=as_json)
        _log_to_stderr()  # after verification: its accepted signatures are printed once, as `verify` prints them
        host = registry_host or verified.bom.local_registry
        target = push_mod.Target(host, insecure=host in insecure, ca_file=Path(ca_file) if ca_file else None)
        client = push_mod.connect(target)
        # One line naming the endpoint, before the first request.
        click.echo(f"push: target {'; '.join(client.describe())}" + (" (dry run: nothing is sent)" if dry_run else ""),
                   err=as_json)
        progress = _Progress(sys.stderr.isatty(), label="push")
        result = push_mod.push(verified, target, client, jobs=jobs, chunk_size=chunk_mib << 20, dry_run=dry_run,
                               progress=progress)
        progress.finish()
    record = None
    if not dry_run:  # every push leaves a record of which keys signed what it put into the registry
        record = audit.record_for(verified.verification, policy=trust, action="push", now=now,
                                  destination=result.target, image_count=len(result.images))
        audit.append_log(record, log_path)
    if as_json:
        click.echo(json.dumps({"verification": verified.verification.to_json(),
                               "base": _base_json(verified.bom.base, base), **result.to_json(),
                               "record": record.to_json() if record else None,
                               "auditLog": str(log_path) if record else None}, indent=2))
        push_mod.require_readback(result)
        return
    for image in result.images:
        states = sorted({m.state for m in image.manifests})
        click.echo(f"  {image.local.split('@')[0]} -> {image.target} ({', '.join(image.platforms)}; "
                   f"manifests {'/'.join(states)})")
    if dry_run:
        click.echo(f"dry run: would push {result.count('missing')} blob(s) and manifest(s); "
                   f"{result.count('present')} already at {result.target}")
        return
    rb = result.readback
    resumed = f"; {result.resumed_bytes:,} not sent again, interrupted uploads resumed" if result.resumed_bytes else ""
    click.echo(f"pushed {len(result.images)} images to {result.target}: {result.count('uploaded')} blob(s) uploaded "
               f"({result.uploaded_bytes:,} bytes{resumed}), {result.count('mounted')} mounted, {result.count('present')} "
               f"already there, {result.count('pushed')} manifest(s) pushed"
               + (f"; read back {rb.manifests} manifests, {rb.blobs} blobs, {rb.references} references in the "
                  "rewritten manifests" if rb else ""))
    click.echo(f"verification record appended to {log_path}")
    push_mod.require_readback(result)


# --- end push ----------------------------------------------------------------------------------
# --- split (issue 13) ---------------------------------------------------------------------------


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """A size with a binary or decimal suffix (4GiB, 700MB, 65536); parts.parse_size says what is wrong."""
    from .parts import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _split_echo(done: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"index": str(done.index_path), "signedBy": done.signer, **done.index.to_json()},
                              indent=2))
        return
    for part in done.index.parts:
        click.echo(f"  {part.name}  {part.size:,} bytes  sha256:{part.sha256}")
    click.echo(f"wrote {len(done.index.parts)} parts of {done.index.bundle} ({done.index.size:,} bytes) and "
               f"{done.index_path.name}, signed by {done.index.authority} with {done.signer}")


@cli.command("split", short_help="Split a signed bundle into parts that fit the media.")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False))
@click.option("--max-part-size", required=True, metavar="SIZE", callback=_size,
              help="Largest part: 4GiB, 4095MiB (FAT32 holds files under 4 GiB), 700MB, or bytes.")
@click.option("--authority", default="vendor", show_default=True,
              help="Who signs the parts index: an authority the customers' policies require (the vendor always is).")
@click.option("--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Signing key for the index (PKCS#8 PEM or cosign). Password from $AIRGAP_BUNDLE_KEY_PASSWORD.")
@click.option("--cert", "cert_path", type=click.Path(exists=True, dir_okay=False),
              help="The signer's X.509 certificate (recommended: it carries notAfter).")
@click.option("--output-dir", type=click.Path(file_okay=False, exists=True),
              help="Write the parts and the index here [default: beside BUNDLE].")
@click.option("--json", "as_json", is_flag=True, help="Print the index as JSON.")
def split_command(bundle: str, max_part_size: int, authority: str, key_path: str, cert_path: str | None,
                  output_dir: str | None, as_json: bool) -> None:
    """Split a signed bundle into numbered parts and a signed index, for media with a size limit.

    \b
    Writes BUNDLE.part-0001, BUNDLE.part-0002, ... (consecutive byte ranges of BUNDLE: `cat` joins
    them) and BUNDLE.parts.json, an index of each part's size and sha256 signed with --key. Co-sign
    before splitting: the parts are the signed file's bytes. BUNDLE is left as it is. `verify`,
    `inspect` and `push` take BUNDLE.parts.json as the bundle (docs/bundle-format.md section 8).

    \b
    Examples:
      airgap-bundle split app.bundle.tar --max-part-size 4GiB --key vendor.key --cert vendor.crt
      airgap-bundle split app.bundle.tar --max-part-size 4095MiB --key vendor.key --output-dir /media/usb
    """
    from . import keys, parts

    signer = keys.load_signer(key_path, cert_path=cert_path, password=_key_password)
    _split_echo(parts.split(Path(bundle), max_part_size, signer, authority,
                            out_dir=Path(output_dir) if output_dir else None), as_json)


@cli.command("join", short_help="Join a split bundle's parts into one file, checked.")
@click.argument("index", metavar="NAME.parts.json", type=click.Path(exists=True, dir_okay=False))
@click.option("--policy", required=True, type=click.Path(dir_okay=False),
              help="Verification policy YAML: the index must be signed by an authority it requires.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="The bundle file to write [default: the index's bundle name, beside the index]. Must not exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def join_command(index: str, policy: str, output: str | None, as_json: bool) -> None:
    """Join a split bundle's parts into the one bundle file they were cut from.

    \b
    For tools that need a single file: `verify`, `inspect` and `push` read the parts in place and need
    no join. The index's signature is checked against POLICY first, then each part's size, then every
    part is read once while the whole is hashed: the file is written under a temporary name and renamed
    only when it hashes to the sha256 the index signs. A missing, short or damaged part is named (exit
    31); a bad index signature exits 24/25/22. The result is the signed bundle, byte for byte: verify it
    as any bundle. (`cat NAME.part-*` gives the same bytes, unchecked.)

    \b
    Examples:
      airgap-bundle join /media/usb/app.bundle.tar.parts.json --policy policy.yaml --output app.bundle.tar
      airgap-bundle verify app.bundle.tar --policy policy.yaml --extract ./app
    """
    from . import keys, parts

    trust = keys.load_trust(policy)
    path = Path(index)
    done = parts.join(path, trust, datetime.datetime.now(datetime.UTC), Path(output) if output else None)
    if as_json:
        click.echo(json.dumps({"path": str(done.path), "bundle": done.index.to_json()}, indent=2))
    else:
        click.echo(f"joined {len(done.index.parts)} part(s) of {path} into {done.path} "
                   f"({done.index.size:,} bytes, sha256:{done.index.sha256}, as the index signs)")


# --- end split ---------------------------------------------------------------------------------
# --- build -------------------------------------------------------------------------------------

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _fetch_options(*, jobs: str, offline: str) -> Callable[[_Command], _Command]:
    """The options `build` and `lock` share for reaching registries and the cache, in this order:
    --jobs, --insecure-registry, --cache, --offline. `jobs` and `offline` are each command's help for those two."""
    options = [
        click.option("--jobs", "-j", default=8, show_default=True, type=click.IntRange(1, 64), help=jobs),
        click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST",
                     help="Plain HTTP for this registry host (repeat); also `insecure: true` in the spec."),
        click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
                     help="Cache layout consulted first [default: $XDG_CACHE_HOME/airgap-bundle]."),
        click.option("--offline", is_flag=True, help=offline),
    ]

    def apply(command: _Command) -> _Command:
        for option in reversed(options):  # as stacked decorators apply: the one nearest the function first
            command = option(command)
        return command

    return apply


@cli.command("build", short_help="Build a signed bundle from a bundle.yaml.")
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="The bundle file to write (NAME.bundle.tar). Written under a temporary name, renamed at the end.")
@click.option("--authority", default="vendor", show_default=True, help="Who signs at build time.")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False),
              help="Signing key (PKCS#8 PEM or cosign). Password from $AIRGAP_BUNDLE_KEY_PASSWORD or a prompt.")
@click.option("--cert", "cert_path", type=click.Path(exists=True, dir_okay=False),
              help="The signer's X.509 certificate (recommended: it carries notAfter).")
@click.option("--unsigned", is_flag=True, help="Write a bundle without a signature (for co-signing workflows).")
@_fetch_options(jobs="Concurrent downloads.", offline="Build from the cache alone; fail naming what is missing.")
@click.option("--crossplane-target", metavar="VERSION", help="Crossplane version to check against (else the spec's).")
@click.option("--update", is_flag=True,
              help="Re-resolve every tag on purpose and rewrite the lock (prints old -> new digests).")
@click.option("--max-part-size", metavar="SIZE", callback=_size,
              help="Then split the signed bundle into OUTPUT.part-NNNN of at most SIZE and a signed "
                   "OUTPUT.parts.json (4GiB, 700MB, ...); OUTPUT itself is removed.")
@click.option("--base", "base_path", type=click.Path(dir_okay=False), metavar="PREVIOUS.bundle.tar",
              help="Build an update bundle: omit the image blobs this full bundle holds (verified first; a file "
                   "or a split bundle's NAME.parts.json).")
@click.option("--base-policy", type=click.Path(dir_okay=False),
              help="With --base: the verification policy the base must pass (as `verify` checks it).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build_command(spec_file: str, output: str, authority: str, key_path: str | None, cert_path: str | None,
                  unsigned: bool, jobs: int, insecure: tuple[str, ...], cache_dir: str | None, offline: bool,
                  crossplane_target: str | None, update: bool, max_part_size: int | None, base_path: str | None,
                  base_policy: str | None, as_json: bool) -> None:
    """Build a signed bundle: render, sweep, pull, Crossplane gate, rewrite, BOM, archive, sign.

    \b
    Stops at the first stage that fails, with that stage's message and exit code (README.md "Exit
    codes"), and leaves nothing at OUTPUT (a previous bundle there is untouched). Refuses to write an
    unsigned bundle unless --unsigned is given.

    \b
    The lock (SPEC with .lock for .yaml, beside it; docs/lock.md): the first build writes it; later
    builds pull by its digests and resolve no tag, and fail (exit 16) when it disagrees with the spec
    or a locked digest is gone. --update re-resolves every tag and rewrites it. One line says which.

    \b
    Example (examples/bundle.yaml pulls through a mirror on 127.0.0.1:5000: scripts/demo.sh starts
    one with the images, and runs these steps and the rest of the flow end to end):
      airgap-bundle keys generate --out vendor --cert
      airgap-bundle build examples/bundle.yaml --output demo.bundle.tar --key vendor.key --cert vendor.crt
      airgap-bundle build examples/bundle.yaml --output demo.bundle.tar --unsigned --update
      airgap-bundle build examples/bundle.yaml --output demo.bundle.tar --key vendor.key --max-part-size 4GiB

    \b
    An update bundle (docs/release-engineer.md "Update bundles"): --base names the previous full
    bundle, verified with --base-policy (signatures, then every member) before anything is taken
    from it; the image blobs it holds are named in the statement, not carried. Customers verify and
    push the update with --base PREVIOUS.bundle.tar.
      airgap-bundle build examples/bundle.yaml --output demo-update.bundle.tar --key vendor.key \\
          --cert vendor.crt --base demo.bundle.tar --base-policy policy.yaml
    """
    from . import keys, pipeline
    from . import spec as spec_mod
    from . import update as updates
    from .pull import default_cache_dir

    _log_to_stderr()
    if (base_path is None) != (base_policy is None):
        raise UsageError("--base and --base-policy go together: the base is verified before anything is taken from it",
                         hint="pass both, or neither for a full bundle")
    epoch_text = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch_text is not None and not epoch_text.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH={epoch_text!r} is not a number of seconds")
    if max_part_size is not None and not key_path:
        raise UsageError("--max-part-size needs --key: the parts index is signed",
                         hint="build a signed bundle, or build, co-sign, then `airgap-bundle split`")
    spec = spec_mod.load(spec_file)
    signer = keys.load_signer(key_path, cert_path=cert_path, password=_key_password) if key_path else None
    base = None
    if base_path is not None and base_policy is not None:
        base = updates.load_base(base_path, keys.load_trust(base_policy), now=datetime.datetime.now(datetime.UTC))
        click.echo(f"base: {base_path} is {base.name} {base.version} (statement {base.statement_digest}), verified",
                   err=True)
    progress = _Progress(sys.stderr.isatty())
    result = pipeline.build(spec, pipeline.BuildOptions(
        output=Path(output), signer=signer, authority=authority, unsigned=unsigned,
        cache=Path(cache_dir) if cache_dir else default_cache_dir(), jobs=jobs, offline=offline,
        insecure_registries=insecure, crossplane_target=crossplane_target,
        source_date_epoch=int(epoch_text) if epoch_text else None, update=update, base=base), progress)
    split = None
    if max_part_size is not None:
        from . import parts

        assert signer is not None  # --max-part-size requires --key, checked above
        split = parts.split(result.output, max_part_size, signer, authority)
        result.output.unlink()  # the parts are the output; `split` keeps the bundle when both are wanted
    if as_json:
        click.echo(json.dumps({
            "output": str(result.output), "size": result.size, "statementSha256": result.statement_sha256,
            "signedBy": list(result.signed_by), "coverage": list(result.coverage),
            "images": [{"source": i.source, "local": i.local, "upstreamDigest": i.upstream_digest,
                        "bundledDigest": i.bundled_digest, "platforms": [p.platform for p in i.platforms]}
                       for i in result.images],
            "charts": [{"name": c.name, "version": c.version, "path": c.path,
                        **({"source": c.fetched.to_dict()} if c.fetched else {}),
                        **({"dependencies": [d.to_dict() for d in c.dependencies]} if c.dependencies else {})}
                       for c in result.charts],
            "lock": result.lock.to_json(),
            "base": _base_json(result.base, base_path),
            **({} if split is None else {"parts": {"index": str(split.index_path), **split.index.to_json()}}),
        }, indent=2))
        return
    for line in result.coverage:
        click.echo(f"  {line}")
    for image in result.images:
        click.echo(f"  {image.source} -> {image.local}")
    _echo_lock(result.lock)
    if (b := _base_json(result.base, base_path)) is not None:
        click.echo(f"update of {b['name']} {b['version']} (statement {b['statementDigest']}): {b['blobsFromBase']} "
                   "image blob(s) "
                   f"({b['bytesFromBase']:,} bytes) taken from the base, not carried")
    click.echo(f"wrote {result.output} ({result.size:,} bytes, {len(result.images)} images, "
               f"statement sha256:{result.statement_sha256[:16]}..., signed by {', '.join(result.signed_by) or 'nobody'})")
    if split is not None:
        _split_echo(split, as_json=False)


# --- end build ---------------------------------------------------------------------------------
# --- lock --------------------------------------------------------------------------------------


def _echo_lock(outcome: LockOutcome) -> None:
    """The lock line, then each change (old -> new digest) and each difference, indented."""
    click.echo(outcome.line())
    if outcome.spec_changed and outcome.action in ("used", "checked") and not outcome.differences:
        click.echo("  the spec changed since the lock was written, but nothing the lock pins differs")
    for change in outcome.changes:
        click.echo(f"  {change}")
    for difference in outcome.differences:
        click.echo(f"  {difference.message}")


@cli.command("lock", short_help="Pin every image and chart of a spec in bundle.lock.")
@click.argument("spec_file", metavar="SPEC", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, metavar="[IMAGE...]")
@click.option("--update", is_flag=True,
              help="Re-resolve on purpose: every tag, or only the IMAGEs named (name, name:tag or name@digest).")
@click.option("--check", is_flag=True,
              help="Only compare spec and lock (no image registry, nothing written); exit 16 when they disagree.")
@_fetch_options(jobs="Concurrent requests.", offline="Resolve from the cache alone; fail naming what is missing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def lock_command(spec_file: str, images: tuple[str, ...], update: bool, check: bool, jobs: int,
                 insecure: tuple[str, ...], cache_dir: str | None, offline: bool, as_json: bool) -> None:
    """Write, update or check bundle.lock: every image and chart of SPEC pinned by digest.

    \b
    The lock lives beside SPEC (bundle.yaml -> bundle.lock; format in docs/lock.md). Without options:
    write it, or make it agree with the spec, keeping every pin of an image the spec still carries,
    resolving images the spec added and dropping those it removed. --update re-resolves on purpose
    (all tags and chart versions, or only the IMAGEs named) and prints each old -> new digest.
    --check compares only, writes nothing and asks no image registry: exit 16 when an image or chart
    was added or removed, platforms differ, a local chart changed, or the spec's chart version no
    longer admits the locked one. Exit 16 also when a locked digest is no longer served (nor cached).

    \b
    Examples:
      airgap-bundle lock bundle.yaml                          # write or reconcile bundle.lock
      airgap-bundle lock bundle.yaml --check                  # CI: spec and lock agree
      airgap-bundle lock bundle.yaml --update nginx:1.27      # move one tag on purpose
      airgap-bundle lock bundle.yaml --update --json          # re-resolve everything
    """
    from . import lock as lockfile
    from . import pipeline
    from . import spec as spec_mod
    from .pull import default_cache_dir
    from .render import display as render_display

    if images and not update:
        raise UsageError("IMAGE arguments go with --update", hint="airgap-bundle lock SPEC --update IMAGE...")
    if check and update:
        raise UsageError("--check and --update are exclusive")
    _log_to_stderr()
    spec = spec_mod.load(spec_file)
    progress = _Progress(sys.stderr.isatty())
    outcome = pipeline.lock(spec, pipeline.LockOptions(
        lock=lockfile.path_for(spec.path), update=images if update else None, check=check,
        cache=Path(cache_dir) if cache_dir else default_cache_dir(), jobs=jobs, offline=offline,
        insecure_registries=insecure), progress)
    if as_json:
        click.echo(json.dumps({"ok": not outcome.differences, **outcome.to_json()}, indent=2))
    else:
        _echo_lock(outcome)
    if outcome.differences:
        first = outcome.differences[0]
        raise LockMismatchError(f"{render_display(outcome.path)} disagrees with the spec in "
                                f"{len(outcome.differences)} place(s), first: {first.message}",
                                hint=lockfile.HINT_RECORD)

# --- end lock ----------------------------------------------------------------------------------


def _local_charts(spec: Spec, cache_dir: str | None, offline: bool, locked: Lock | None) -> list[ChartSource]:
    """The SPEC's charts, those named by reference fetched (through its registries, at the versions
    SPEC's lock pins) into a folder removed at exit."""
    from . import charts as charts_mod
    from . import lock as lockfile
    from .layout import Layout
    from .pull import default_cache_dir

    _log_to_stderr()
    work = Path(tempfile.mkdtemp(prefix="airgap-sweep-charts-"))
    atexit.register(shutil.rmtree, work, True)
    cache = Layout(Path(cache_dir) if cache_dir else default_cache_dir(), remember_checks=True)
    from .render import Tools

    located = charts_mod.localize(spec.charts, workdir=work, cache=cache, tools=Tools(),
                                  registries=spec.registries, repositories=spec.chart_repositories, offline=offline,
                                  pins=lockfile.chart_pins(locked) if locked else None)
    return [c.chart for c in located]


def _log_to_stderr() -> None:
    """Library log lines (the endpoints a run contacts, narrowed indexes) go to stderr, unadorned."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="airgap-bundle")
