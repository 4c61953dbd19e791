"""The command line: parse arguments, call the library, print, exit with the documented code.

Only this module prints. Library errors are `BundlerError`s: caught once in `main()`, printed as one
line on stderr (`airgap-bundle: error: ...`), and turned into `exit_code`. `--verbose` re-raises them so
the traceback is there when a developer wants it. Exit codes are listed in the README.
"""

from __future__ import annotations

import json
import sys
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


def main() -> None:
    cli(prog_name="airgap-bundle")
