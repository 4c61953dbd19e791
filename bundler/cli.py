"""The command line: parse arguments, call the library, print, exit with the documented code.

Only this module prints. Library errors are `BundlerError`s: caught once in `main()`, printed as one
line on stderr (`airgap-bundle: error: ...`), and turned into `exit_code`. `--verbose` re-raises them so
the traceback is there when a developer wants it. Exit codes are listed in the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from . import __version__
from .errors import BundlerError, InvalidReferenceError
from .reference import ImageRef


class _Group(click.Group):
    """Turns BundlerError into one line and its exit code; usage errors exit 2 (click's own)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BundlerError as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                raise
            click.echo(f"airgap-bundle: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="airgap-bundle")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Build signed, multi-architecture bundles for air-gapped Kubernetes clusters.

    \b
    Typical flow:
      airgap-bundle sweep bundle.yaml --fail-on-unvendored   # CI: every image accounted for
      airgap-bundle build bundle.yaml --output app.bundle.tar --key vendor.key
      airgap-bundle sign app.bundle.tar --authority customer --key customer.key
      airgap-bundle verify app.bundle.tar --policy policy.yaml --extract ./out

    Exit codes are listed in the README ("Exit codes").
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


# --- ref ---------------------------------------------------------------------------------------

@cli.command("ref")
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


# --- crossplane (the Crossplane gate) ---------------------------------------------------------------


@cli.group("crossplane")
def crossplane_group() -> None:
    """Crossplane packages and Compositions: the gate that fails closed."""


@crossplane_group.command("check")
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, path_type=Path))
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
    Example:
      airgap-bundle crossplane check --target 2.0 \\
        --package xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0=./provider-aws-s3 rendered.yaml
    """
    from . import crossplane
    from .spec import load as load_spec
    from .xpkg import read_package

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


def main() -> None:
    cli(prog_name="airgap-bundle")
