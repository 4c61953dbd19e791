"""Sweep reports: a `Sweep` and the vendored status of each image -> text, JSON, SARIF, JUnit, GitHub.

Pure functions (sweep result in, `str` out); `cli.py` prints what they return. Also parses a
`--vendored` list (plain text or JSON) into references and digests, from text the caller has read.

Formats:
- `json`: `{"images": [{"ref", "normalized", "canonical", "confidence", "hook", "vendored",
  "locations": [{"file", "line", "chart", "template", "kind", "namespace", "name", "path"}]}],
  "summary": {...}}` (the README documents `summary`).
- `sarif`: SARIF 2.1.0 (https://docs.oasis-open.org/sarif/sarif/v2.1.0/sarif-v2.1.0.html), one result
  per unvendored image (first location, the others as `relatedLocations`) and one per invalid reference,
  so GitHub code scanning shows them on the pull request.
- `junit`: one test case per image (failure when not vendored), one per invalid reference, and a
  skipped test case per image the spec excludes.
- `github`: workflow commands (`::error file=...,line=...::`), one per location of an unvendored image
  or invalid reference; unconfirmed candidates get `::warning` when no check was asked.

Does not run the sweep or decide the exit code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree as ET

from .documents import format_path
from .errors import InputError
from .reference import ImageRef
from .sweep import Finding, Image, Invalid, Sweep

FORMATS = ("text", "json", "sarif", "junit", "github")
SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
TOOL_URI = "https://github.com/airgap-bundle/airgap-bundle"
Status = Mapping[ImageRef, bool | None]


def location(f: Finding | Invalid) -> dict[str, Any]:
    return {
        "file": f.origin.file,
        "line": f.line,
        "chart": f.origin.chart,
        "template": f.origin.template,
        "kind": f.kind,
        "namespace": f.namespace,
        "name": f.name,
        "path": format_path(f.path),
        "rule": getattr(f, "rule", None),
        "evidence": getattr(f, "evidence", None),
    }


def image_json(image: Image, vendored: bool | None) -> dict[str, Any]:
    return {
        "ref": image.written,
        "normalized": str(image.findings[0].ref),
        "canonical": str(image.ref),
        "confidence": image.confidence,
        "hook": image.hook,
        "vendored": vendored,
        "locations": [location(f) for f in image.findings],
    }


def summary(result: Sweep, status: Status, check: str) -> dict[str, Any]:
    unvendored = [str(ref) for ref, ok in status.items() if ok is False]
    return {
        "documents": result.documents,
        "images": len(result.images),
        "definite": sum(1 for i in result.images if i.confidence == "definite"),
        "candidates": len(result.candidates),
        "confirmed": sum(1 for i in result.images if i.confirmed),
        "test_hooks": len(result.test_hooks),
        "check": check,
        "unvendored": unvendored,
        "invalid": [{"ref": i.written, "error": i.error, **location(i)} for i in result.invalid],
        "excluded": [
            {
                "ref": str(s.image.ref),
                "reason": s.reason,
                "locations": [location(f) for f in s.image.findings],
            }
            for s in result.skipped
        ],
        "unresolved": [str(i.ref) for i in result.unresolved],
        "passed": not unvendored and not result.invalid and not result.unresolved,
    }


def to_json(result: Sweep, status: Status, check: str, images: Iterable[Image] | None = None) -> str:
    chosen = result.images if images is None else tuple(images)
    doc = {
        "images": [image_json(i, status.get(i.ref)) for i in chosen],
        "summary": summary(result, status, check),
    }
    return json.dumps(doc, indent=2) + "\n"


def _where(f: Finding | Invalid) -> str:
    ns = f"{f.namespace}/" if f.namespace else ""
    chart = f"  (chart {f.origin.chart})" if f.origin.chart else ""
    return f"{f.origin.file}:{f.line}  {f.kind} {ns}{f.name}  {format_path(f.path)}{chart}"


def to_text(result: Sweep, status: Status, check: str, images: Iterable[Image] | None = None) -> str:
    lines: list[str] = []
    chosen = result.images if images is None else tuple(images)
    for image in chosen:
        vendored = status.get(image.ref)
        flags = [image.confidence + (" (confirmed)" if image.confirmed else "")]
        if image.hook:
            flags.append("test hook")
        if vendored is not None:
            flags.append("vendored" if vendored else "NOT VENDORED")
        if image in result.unresolved:
            flags.append("UNRESOLVED: confirm or exclude it in the spec")
        lines.append(f"{image.ref}  [{', '.join(flags)}]")
        for f in image.findings:
            written = f"  as {f.written}" if f.written != str(image.ref) else ""
            lines.append(f"    {_where(f)}{written}")
    if images is None:
        for skipped in result.skipped:
            lines.append(f"{skipped.image.ref}  [excluded: {skipped.reason}]")
            lines.extend(f"    {_where(f)}" for f in skipped.image.findings)
        for bad in result.invalid:
            lines.append(f"INVALID {bad.written!r}: {bad.error}")
            lines.append(f"    {_where(bad)}")
    return "\n".join(lines) + ("\n" if lines else "")


def summary_line(result: Sweep, status: Status) -> str:
    """The one progress/summary line the CLI writes to stderr."""
    unvendored = sum(1 for ok in status.values() if ok is False)
    text = (
        f"swept {result.documents} documents: {len(result.images)} images ({len(result.found)} definite, "
        f"{len(result.candidates)} candidates, {len(result.test_hooks)} only in test hooks), "
        f"{len(result.skipped)} excluded, {len(result.invalid)} invalid"
    )
    if any(ok is not None for ok in status.values()):
        text += f", {unvendored} not vendored"
    if result.review:
        text += f", {len(result.unresolved)} unresolved"
    return text


# --- SARIF 2.1.0 ---------------------------------------------------------------------------------

_RULES = [
    {
        "id": "unvendored-image",
        "name": "UnvendoredImage",
        "shortDescription": {"text": "An image the deployment pulls is not carried by the bundle"},
        "fullDescription": {
            "text": "Vendor the image (add it to the bundle spec or its sources), confirm a "
            "candidate with `confirm: true`, or exclude it with a reason."
        },
        "defaultConfiguration": {"level": "error"},
    },
    {
        "id": "invalid-image-reference",
        "name": "InvalidImageReference",
        "shortDescription": {"text": "An image field holds a reference that is not valid"},
        "fullDescription": {
            "text": "Image references follow the distribution/reference grammar: lowercase "
            "repository, tag of at most 128 characters, sha256 digests of 64 hex."
        },
        "defaultConfiguration": {"level": "error"},
    },
    {
        "id": "unresolved-candidate",
        "name": "UnresolvedCandidate",
        "shortDescription": {"text": "A value looks like an image and the bundle spec does not say whether it is one"},
        "fullDescription": {
            "text": "Review it: `confirm: true` in the spec's images: to vendor it, or `exclude: <reason>`. "
            "`airgap-bundle sweep SPEC --emit-images` prints the entries to paste."
        },
        "defaultConfiguration": {"level": "error"},
    },
]


def _uri(file: str) -> str:
    return quote(file.replace("\\", "/").lstrip("<").rstrip(">"), safe="/:@-._~")


def _physical(f: Finding | Invalid) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": _uri(f.origin.file)},
            "region": {"startLine": max(f.line, 1)},
        },
        "logicalLocations": [
            {
                "name": format_path(f.path),
                "kind": "member",
                "fullyQualifiedName": f"{f.kind}/{f.namespace or ''}/{f.name}:{format_path(f.path)}",
            }
        ],
    }


def _failing(result: Sweep, status: Status, image: Image) -> str | None:
    """The rule an image breaks, if any: unvendored under the check asked, else an unresolved candidate."""
    if status.get(image.ref) is False:
        return "unvendored-image"
    return "unresolved-candidate" if image in result.unresolved else None


def to_sarif(result: Sweep, status: Status, check: str, tool_version: str = "0") -> str:
    results: list[dict[str, Any]] = []
    for image in result.images:
        rule = _failing(result, status, image)
        if rule is None:
            continue
        first, *rest = image.findings
        what = "is not vendored" if rule == "unvendored-image" else "is neither confirmed nor excluded in the spec"
        entry: dict[str, Any] = {
            "ruleId": rule,
            "ruleIndex": 0 if rule == "unvendored-image" else 2,
            "level": "error",
            "message": {
                "text": f"{image.ref} ({image.confidence}) {what}; named at "
                f"{format_path(first.path)} in {first.kind} {first.name}"
            },
            "locations": [_physical(first)],
            "partialFingerprints": {"imageRef/v1": str(image.ref)},
            "properties": {"canonical": str(image.ref), "confidence": image.confidence, "hook": image.hook},
        }
        if rest:
            entry["relatedLocations"] = [
                {"id": n, **_physical(f), "message": {"text": f"also named here as {f.written}"}}
                for n, f in enumerate(rest, start=1)
            ]
        results.append(entry)
    for bad in result.invalid:
        results.append(
            {
                "ruleId": "invalid-image-reference",
                "ruleIndex": 1,
                "level": "error",
                "message": {"text": f"{bad.written!r} is not a valid image reference: {bad.error}"},
                "locations": [_physical(bad)],
            }
        )
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "airgap-bundle",
                        "version": tool_version,
                        "informationUri": TOOL_URI,
                        "rules": _RULES,
                    }
                },
                "results": results,
                "properties": {"check": check, "documents": result.documents, "images": len(result.images)},
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


# --- JUnit XML -----------------------------------------------------------------------------------


def to_junit(result: Sweep, status: Status, check: str) -> str:
    suite = ET.Element("testsuite", name="airgap-bundle sweep")
    failures = skipped = tests = 0
    for image in result.images:
        tests += 1
        case = ET.SubElement(suite, "testcase", classname=f"images.{image.confidence}", name=str(image.ref))
        where = "\n".join(_where(f) for f in image.findings)
        rule = _failing(result, status, image)
        if rule is not None:
            failures += 1
            message = f"{image.ref} is not vendored" if rule == "unvendored-image" else \
                f"{image.ref} is an unresolved candidate: confirm or exclude it in the spec"
            ET.SubElement(case, "failure", message=message, type=rule).text = where
        else:
            ET.SubElement(case, "system-out").text = where
    for bad in result.invalid:
        tests += 1
        failures += 1
        case = ET.SubElement(suite, "testcase", classname="images.invalid", name=bad.written or "(empty)")
        ET.SubElement(case, "failure", message=bad.error, type="invalid-image-reference").text = _where(bad)
    for skip in result.skipped:
        tests += 1
        skipped += 1
        case = ET.SubElement(suite, "testcase", classname="images.excluded", name=str(skip.image.ref))
        ET.SubElement(case, "skipped", message=skip.reason)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="airgap-bundle", tests=str(tests), failures=str(failures))
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- GitHub workflow commands --------------------------------------------------------------------


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def _gh(level: str, f: Finding | Invalid, title: str, message: str) -> str:
    return (
        f"::{level} file={_gh_prop(f.origin.file)},line={max(f.line, 1)},title={_gh_prop(title)}::"
        f"{_gh_data(message)}"
    )


def to_github(result: Sweep, status: Status, check: str) -> str:
    lines: list[str] = []
    for image in result.images:
        vendored = status.get(image.ref)
        for f in image.findings:
            if vendored is False:
                lines.append(
                    _gh(
                        "error",
                        f,
                        "Unvendored image",
                        f"{image.ref} is not vendored ({format_path(f.path)} in {f.kind} {f.name})",
                    )
                )
            elif vendored is None and not image.carried:
                lines.append(
                    _gh(
                        "error" if image in result.unresolved else "warning",
                        f,
                        "Candidate image",
                        f"{image.ref} looks like an image ({format_path(f.path)}): confirm or exclude it "
                        f"in the bundle spec",
                    )
                )
    for bad in result.invalid:
        lines.append(_gh("error", bad, "Invalid image reference", f"{bad.written!r}: {bad.error}"))
    return "\n".join(lines) + ("\n" if lines else "")


def render_report(fmt: str, result: Sweep, status: Status, check: str, tool_version: str = "0") -> str:
    match fmt:
        case "text":
            return to_text(result, status, check)
        case "json":
            return to_json(result, status, check)
        case "sarif":
            return to_sarif(result, status, check, tool_version)
        case "junit":
            return to_junit(result, status, check)
        case "github":
            return to_github(result, status, check)
    raise ValueError(f"unknown format {fmt!r}")


# --- images: entries to paste into the spec ----------------------------------------------------------


def _comment(text: str) -> str:
    return " ".join(text.split())  # a comment is one line, whatever a manifest's string holds


def to_images_yaml(result: Sweep, spec_file: str, *, has_images_key: bool) -> str:
    """The spec's `images:` entries the review needs, as YAML to paste: one per candidate the spec neither
    confirms nor excludes, `confirm: true` (vendor it) with the evidence for it as comments. Where a value
    is not an image the cluster pulls, the reviewer replaces `confirm: true` with `exclude: <reason>`."""
    todo = result.candidates
    if not todo:
        return f"# airgap-bundle sweep --emit-images: {spec_file} leaves no candidate unresolved; nothing to add.\n"
    lines = [
        f"# airgap-bundle sweep --emit-images: {len(todo)} unresolved candidate(s) in {spec_file}.",
        "# Paste " + ("these entries under the spec's `images:` key." if has_images_key
                      else "this at the end of the spec."),
        "# Each entry vendors the image; where a value is not an image the cluster pulls, replace",
        "# `confirm: true` with `exclude: <reason>`.",
    ]
    if not has_images_key:
        lines.append("images:")
    for image in todo:
        lines.append(f"  # candidate {image.ref}, found at:")
        for f in image.findings:
            evidence = f", {f.evidence}" if f.evidence else ""
            written = f"  as {f.written}" if f.written != str(image.ref) else ""
            lines.append("  #   " + _comment(f"{_where(f)}  [rule {f.rule}{evidence}]{written}"))
        lines.append(f"  - ref: {image.ref}")
        lines.append("    confirm: true")
    return "\n".join(lines) + "\n"


# --- --vendored lists ----------------------------------------------------------------------------


def parse_vendored(text: str, source: str) -> tuple[list[ImageRef], list[str]]:
    """References and digests from a `--vendored` file's text.

    Accepted: plain text (one reference per line, `#` comments); a JSON list of strings or of objects with
    `ref`/`canonical`; this tool's own `--format json` output; an OCI layout's `index.json` (references
    from the `io.containerd.image.name` / `org.opencontainers.image.ref.name` annotations when they are
    full references, and every manifest digest).

    Raises:
        InputError: a line or entry is not a valid reference (with file and line), or the JSON has
            no known shape.
    """
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{source}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        return _vendored_json(data, source)
    refs: list[ImageRef] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            parsed = ImageRef.try_parse(entry)
            if parsed is None:
                raise InputError(
                    f"{source}:{number}: {entry!r} is not a valid image reference",
                    hint="one reference per line, e.g. registry.example.com/team/app:1.2",
                )
            refs.append(parsed)
    return refs, []


def _vendored_json(data: Any, source: str) -> tuple[list[ImageRef], list[str]]:
    refs: list[ImageRef] = []
    digests: list[str] = []

    def add(text: Any, strict: bool) -> None:
        parsed = ImageRef.try_parse(text) if isinstance(text, str) else None
        if parsed is not None and (not strict or "/" in text):
            refs.append(parsed)
        elif strict is False:
            raise InputError(f"{source}: {text!r} is not a valid image reference")

    if isinstance(data, dict) and isinstance(data.get("manifests"), list):  # OCI image layout index.json
        for manifest in data["manifests"]:
            if not isinstance(manifest, dict):
                continue
            if isinstance(manifest.get("digest"), str):
                digests.append(manifest["digest"])
            annotations = manifest.get("annotations") or {}
            for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
                if isinstance(annotations.get(key), str):
                    add(annotations[key], strict=True)  # a bare tag names no repository: skip it
        return refs, digests
    items = data.get("images") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise InputError(
            f"{source}: expected a JSON list of references, this tool's JSON report, "
            f"or an OCI layout index.json"
        )
    for item in items:
        add(item.get("canonical") or item.get("ref") if isinstance(item, dict) else item, strict=False)
    return refs, digests
