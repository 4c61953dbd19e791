"""The Helm delivery path: a values override, found by tracing, that moves a chart's images to the local
registry and changes nothing else.

Input: a chart (`spec.ChartSource`), the helm binary (`render.Tools`), the `LocalRefs` map, the local
registry host, and a finder for image references in one document (`sweep.sweep_document`, so one
piece of code decides what an image is). Output: `ChartRelocation`: the override as YAML text, the
value paths it sets, how each image was moved, and what the trace cost.

1. `trace.trace` finds, for every image the chart renders, the values that compose it and the
   non-image places each value also reaches.
2. `solve` chooses values so that each image becomes its local reference: digest-pinned through a
   digest field when the chart has one, else through the tag (`tag@sha256:...`) or a whole-reference
   value; pinned by tag alone when every digest-carrying choice would touch a value that also flows
   into a label, a CR `version` or a command line (the bundle still carries the exact bytes, and the
   BOM still records the digest). A value shared by several images must suit them all.
3. The closed loop (`verify`), on one more render with the override:
   - invariant 1: no image outside the local registry, except hard-coded ones the spec accepts;
   - invariant 2: nothing but image references differs from the plain render (places that differ
     between two plain renders, such as generated secrets, are ignored).
   Each fails the build with its own error and exit code.

An image no value composes (hard-coded in a template) fails the build unless the spec accepts it
(`charts[].acceptHardcoded`, with a reason): a customer installing the chart would pull it upstream.

Does not package the chart or decide which images the bundle carries.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from ruamel.yaml.comments import CommentedMap

from ..charts import declared_dependencies
from ..documents import Document, Path_, format_path
from ..errors import OverrideSideEffectError, RenderError, UnrelocatedImageError
from ..reference import ImageRef
from ..render import Tools, helm_template, materialize_chart, split_helm_output
from ..spec import ChartSource
from . import trace as tracing
from .manifests import LocalRefs, split_fields, yaml_rt
from .trace import Leaf, Site, Trace

How = Literal["values", "digest-field", "tag-only", "accepted"]
DUMP_TEMPLATE = "templates/zz-airgap-bundle-values.yaml"
DUMP_FLAG = "airgapBundleDumpValues"
DIGEST = r"sha256:[0-9a-f]{64}"
ROLE_DIGEST = re.compile(r"digest|sha", re.IGNORECASE)
ROLE_TAG = re.compile(r"tag|version", re.IGNORECASE)
ROLE_REGISTRY = re.compile(r"registry", re.IGNORECASE)


@dataclass(frozen=True)
class Moved:
    """How one image site was moved (or accepted where it is)."""

    site: Site
    target: str  # the reference the site renders with the override
    how: How
    note: str = ""  # why only by tag, or the reason it is accepted


@dataclass(frozen=True)
class ChartRelocation:
    override: str  # the values file, YAML
    paths: tuple[str, ...]  # value paths it sets
    moved: tuple[Moved, ...]
    renders: int
    seconds: float

    def count(self, how: How) -> int:
        return len({m.site.image or m.site.written for m in self.moved if m.how == how})

    def summary(self) -> str:
        images = len({m.site.image or m.site.written for m in self.moved})
        # An image can be moved in one place and accepted in another (a test hook that writes it
        # literally), so the counts are of images per way and may add up to more than the total.
        places = len({(m.site.doc, m.site.split or m.site.path) for m in self.moved})
        parts = [f"{images} images in {places} places: {self.count('values')} set through values",
                 f"{self.count('digest-field')} through digest fields",
                 f"{self.count('tag-only')} pinned only by tag",
                 f"{self.count('accepted')} accepted as hard-coded"]
        notes = sorted({m.note for m in self.moved if m.how == "tag-only" and m.note})
        text = ", ".join(parts) + f"; traced in {self.renders} renders, {self.seconds:.1f} s"
        return text + (f" (tag only: {'; '.join(notes)})" if notes else "")


Find = Callable[[Document], Iterable[Any]]


def relocate_chart(chart: ChartSource, tools: Tools, local: LocalRefs, *, host: str, find: Find,
                   skipped: frozenset[str] = frozenset()) -> ChartRelocation:
    """Trace, solve and verify the values override for one chart.

    `skipped`: canonical references the spec excludes (left as they are, on every path).

    Raises:
        RenderError: the chart does not render.
        UnrelocatedImageError: an image cannot be moved by values (hard-coded and not accepted, or
            composed with fixed text), or is still outside the local registry after the override.
        OverrideSideEffectError: the override changes something other than image references.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="airgap-trace-") as tmp:
        work = Path(tmp)
        root = materialize_chart(chart, work / "chart")
        (root / DUMP_TEMPLATE).write_text(
            f"{{{{- if .Values.{DUMP_FLAG} }}}}\n{{{{ toJson .Values }}}}\n{{{{- end }}}}\n")
        plain = dataclasses.replace(chart, path=root, stamp_version=None, stamp_app_version=None)
        counter = [0]

        def render(extra: Mapping[str, Any]) -> Sequence[Document]:
            counter[0] += 1
            file = work / f"values-{counter[0]}.json"
            file.write_text(json.dumps(extra))
            return split_helm_output(helm_template(plain, tools, extra_values=[file]), Path(chart.path))

        values = effective_values(plain, tools, work, root)
        switches = {path: value for path, value in RELOCATION_SWITCHES.items() if _has(values, path)}
        base_render = render

        def render_switched(extra: Mapping[str, Any]) -> Sequence[Document]:
            return base_render(_merged(tracing.values_patch(values, switches), extra))

        traced = tracing.trace(render_switched if switches else render, values, find)
        accepted = {a.ref.with_default_tag().canonical: a.reason for a in chart.accept_hardcoded}
        moved, changes = solve(traced, local, skipped=skipped, accepted=accepted, chart=str(chart.path))
        changes = {**switches, **changes}
        override = values_yaml(tracing.values_patch(values, changes))
        override_file = work / "override.yaml"
        override_file.write_text(override)
        relocated = tracing.keyed(split_helm_output(helm_template(plain, tools, extra_values=[override_file]),
                                                    Path(chart.path)))
        # Invariant 2 holds against the chart as configured, switches off: a switch must change no manifest.
        plain_base = tracing.keyed(render({})) if switches else traced.base
        verify(traced, moved, relocated, find, host=host, skipped=skipped, chart=str(chart.path),
               plain=plain_base)
    paths = tuple(format_path(p) for p in changes)
    return ChartRelocation(override, paths, tuple(moved), counter[0] + 2, time.monotonic() - started)


# Values that charts require before they render relocated images, set when the chart has them. Each
# must change no manifest (invariant 2 checks that).
# - bitnami `common.errors.insecureImages` (bitnami/charts, common 2.x `_errors.tpl`) fails the render
#   when an image differs from the chart's own unless this is true; bitnami documents it for mirrors.
RELOCATION_SWITCHES: dict[Path_, Any] = {("global", "security", "allowInsecureImages"): True}


def _has(values: Mapping[str, Any], path: Path_) -> bool:
    node: Any = values
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return False
        node = node[step]
    return True


def _merged(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), Mapping) and isinstance(value, Mapping) \
            else value
    return out


def effective_values(chart: ChartSource, tools: Tools, work: Path, root: Path) -> dict[str, Any]:
    """The values templates see: defaults, values files, `--set`, subcharts under their alias and
    `global`, dumped by a template added to the materialized chart. Helm drops null defaults of
    subcharts while merging; they are read back from the subcharts' own values files."""
    flag = work / "dump.json"
    flag.write_text(json.dumps({DUMP_FLAG: True}))
    text = helm_template(chart, tools, extra_values=[flag])
    # The chart's own copy of the template (a subchart's path has /charts/ in it).
    chunk = next((c for c in re.split(r"^---$", text, flags=re.M)
                  if re.search(rf"^# Source: [^/\n]+/{re.escape(DUMP_TEMPLATE)}$", c, re.M)), None)
    try:
        values = json.loads(chunk.split("\n", 2)[2]) if chunk is not None else None
    except (json.JSONDecodeError, IndexError):
        values = None
    if not isinstance(values, dict):
        raise RenderError(f"{chart.path}: could not read the chart's effective values back from helm",
                          hint="report this chart; the values trace needs them")
    values.pop(DUMP_FLAG, None)
    _add_subchart_nulls(root, values)
    return values


def _add_subchart_nulls(root: Path, values: dict[str, Any]) -> None:
    # Chart.yaml's dependencies, or a Helm 2 chart's requirements.yaml: as helm loaded the chart
    for dep in declared_dependencies(root, str(root)).dependencies:
        if not dep.get("name"):
            continue
        sub = root / "charts" / str(dep["name"])
        section = values.get(str(dep.get("alias") or dep["name"]))
        if not sub.is_dir() or not isinstance(section, dict):
            continue
        for path, value in tracing.scalars(_yaml_file(sub / "values.yaml")):
            if value is None:
                node = section
                for step in path[:-1]:
                    node = node.get(step) if isinstance(node, dict) else None  # type: ignore[assignment]
                if isinstance(node, dict) and path[-1] not in node:
                    node[path[-1]] = None


def _yaml_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# --- solving -------------------------------------------------------------------------------------


def solve(traced: Trace, local: LocalRefs, *, skipped: frozenset[str], accepted: Mapping[str, str],
          chart: str) -> tuple[list[Moved], dict[Path_, Any]]:
    """Values that move every site to its local reference, and how each site was moved.

    Raises:
        UnrelocatedImageError: a site no values setting can move, and the spec does not accept.
    """
    plans: dict[int, list[tuple[str, How, dict[int, str]]]] = {}  # site -> options, best first
    moved: list[Moved] = []
    fixed = _fixed_leaves(traced)
    field_targets = _split_targets(traced, local, skipped)
    for n, site in enumerate(traced.sites):
        if site.split is not None:  # a field of an operator's split object: its own target text
            if (site.doc, site.split) not in field_targets:
                continue
            target_fields, how, note = field_targets[(site.doc, site.split)]
            field_name = str(site.path[-1])
            option = _field_option(site, fixed, target_fields[field_name], how)
            if option is not None:
                plans[n] = [option]
                continue
            image = ImageRef.parse(site.image)
            if accepted.get(image.with_default_tag().canonical) is not None:
                moved.append(Moved(site, site.image, "accepted", accepted[image.with_default_tag().canonical]))
                continue
            raise UnrelocatedImageError(
                f"{chart}: {site.where}: field of {site.image} (an operator joins the object's fields) is composed "
                f"so that no values setting renders {target_fields[field_name]!r}",
                hint=f"accept it with charts[].acceptHardcoded: [{{ref: {image.with_default_tag()}, reason: ...}}], "
                     "or deliver through the rewritten manifests")
        ref = ImageRef.try_parse(site.written)
        if ref is None or ref.canonical in skipped:
            continue
        target = local.local_for(ref)
        if target is None:
            continue
        options = _options(site, traced, ImageRef.parse(target), fixed) if site.leaves else []
        if options:
            plans[n] = options
            continue
        reason = accepted.get(ref.with_default_tag().canonical)
        if reason is not None:
            moved.append(Moved(site, site.written, "accepted", reason))
            continue
        raise UnrelocatedImageError(_why_not(site, traced, fixed, chart, target),
                                    hint=f"accept it in the spec with charts[].acceptHardcoded: [{{ref: "
                                         f"{ref.with_default_tag()}, reason: ...}}] (the rewritten manifests "
                                         "still carry it pinned), or change the chart so a value composes it")
    choice = {n: 0 for n in plans}
    while True:
        assigned: dict[int, set[str]] = {}
        for n, k in choice.items():
            for leaf, value in plans[n][k][2].items():
                assigned.setdefault(leaf, set()).add(value)
        conflicts = {leaf for leaf, seen in assigned.items() if len(seen) > 1}
        if not conflicts:
            break
        stuck = True
        for n, k in choice.items():
            if k + 1 < len(plans[n]) and conflicts & plans[n][k][2].keys():
                choice[n] = k + 1
                stuck = False
        if stuck:
            first = min(conflicts)
            raise UnrelocatedImageError(
                f"{chart}: value {traced.leaves[first].dotted} composes several images that need different settings "
                f"({', '.join(sorted({traced.sites[n].written for n in choice if first in plans[n][choice[n]][2]}))})",
                hint="give each image its own value in the chart, or accept the images with charts[].acceptHardcoded")
    changes: dict[Path_, Any] = {}
    for n, k in choice.items():
        target, how, values = plans[n][k]
        note = ""
        if how == "tag-only":
            note = "; ".join(f"{traced.leaves[i].dotted} also reaches {_first_flow(traced, i)}"
                             for i in traced.sites[n].leaves if i in fixed) or "no value can carry a digest"
        split = traced.sites[n].split
        if split is not None:
            note = field_targets[(traced.sites[n].doc, split)][2]
        moved.append(Moved(traced.sites[n], target, how, note))
        for leaf, value in values.items():
            if traced.leaves[leaf].value is None or str(traced.leaves[leaf].value) != value:
                changes[traced.leaves[leaf].path] = value
    return moved, changes


def _split_targets(traced: Trace, local: LocalRefs, skipped: frozenset[str]
                   ) -> dict[tuple[tracing.DocKey, Path_], tuple[dict[str, str], How, str]]:
    """For each split object: the text each field must render so the operator joins the local
    reference (the rewrite's own rule, `manifests.split_fields`), and how that pins it."""
    out: dict[tuple[tracing.DocKey, Path_], tuple[dict[str, str], How, str]] = {}
    for site in traced.sites:
        if site.split is None or (site.doc, site.split) in out:
            continue
        ref = ImageRef.try_parse(site.image)
        target = local.local_for(ref) if ref is not None and ref.canonical not in skipped else None
        if target is None:
            continue
        obj = copy.deepcopy(tracing.get(traced.base[site.doc].obj, site.split))
        changed = split_fields(obj, site.compose, target)
        if changed is None:
            continue
        note = changed[2]
        fields = {k: "" if v is None else str(v) for k, v in obj.items()}
        digest_slot = site.compose.digest_format.slot if site.compose.digest_format is not None else None
        how: How = "tag-only" if note else ("digest-field" if digest_slot and "@" not in fields.get(
            site.compose.format.slot, "@") else "values")
        out[(site.doc, site.split)] = (fields, how, note)
    return out


def _field_option(site: Site, fixed: Mapping[int, str | None], target: str, how: How
                  ) -> tuple[str, How, dict[int, str]] | None:
    """Values that make one field of a split object render `target` exactly."""
    if _blocked(site, fixed):
        return None
    values = tracing.match_pattern(site.pattern, target, lambda _: ".*", _known(fixed))
    return (target, how, values) if values is not None else None


def _blocked(site: Site, fixed: Mapping[int, str | None]) -> bool:
    """A value of the site must not change, and the trace could not tell the text it renders."""
    return any(leaf in fixed and fixed[leaf] is None for leaf in site.leaves)


def _known(fixed: Mapping[int, str | None]) -> dict[int, str]:
    return {leaf: text for leaf, text in fixed.items() if text is not None}


def _first_flow(traced: Trace, leaf: int) -> str:
    return next(iter(traced.flows.get(leaf, ())), "a place the trace could not render")


def _fixed_leaves(traced: Trace) -> dict[int, str | None]:
    """Leaves that must keep the value they render with: they flow into non-image places. The value
    is the text they render as (None when the trace could not tell it)."""
    return {leaf: traced.rendered.get(leaf) for leaf in traced.flows}


def _options(site: Site, traced: Trace, local: ImageRef, fixed: Mapping[int, str | None]
             ) -> list[tuple[str, How, dict[int, str]]]:
    """Ways to render `local` at `site`, best first: by digest (through a digest field, else the tag
    or a whole reference), then by tag alone."""
    if _blocked(site, fixed):
        return []
    tag = local.tag
    targets = [f"{local.name}:{tag}@{local.digest}", f"{local.name}@{local.digest}"] if tag else \
        [f"{local.name}@{local.digest}"]
    options: list[tuple[str, How, dict[int, str]]] = []
    for target in [*targets, f"{local.name}:{tag}" if tag else ""]:
        if not target:
            continue
        values = tracing.match_pattern(site.pattern, target, lambda leaf: _role(
            traced.leaves[leaf], traced.perturbed.get(leaf, "")), _known(fixed))
        if values is None:
            continue
        if "@" not in target:
            how: How = "tag-only"
        elif any(ROLE_DIGEST.search(traced.leaves[i].key) for i in values):
            how = "digest-field"
        else:
            how = "values"
        options.append((target, how, values))
    # Prefer a digest field, then any digest pin, then the tag; keep the order within each.
    rank = {"digest-field": 0, "values": 1, "tag-only": 2, "accepted": 3}
    return sorted(options, key=lambda o: rank[o[1]])


def _role(leaf: Leaf, perturbed: str) -> str:
    key = leaf.key
    validated = "+" in perturbed  # traced as `value+sentinel`: the template checks its shape
    if ROLE_DIGEST.search(key):
        return "(?:sha256:)?[0-9a-f]{64}"
    if ROLE_TAG.search(key):
        return r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}" + ("" if validated else f"(?:@{DIGEST})?")
    if ROLE_REGISTRY.search(key) and "repo" not in key.lower():
        return r"[^/@\s]+"
    value = leaf.value if isinstance(leaf.value, str) else ""
    last = value.rsplit("/", 1)[-1]
    if ":" in last or "@" in value:
        return r"\S+"  # a whole reference (`image: nginx:1.27`)
    return r"(?:[^@\s/]+/)*[^@\s/:]+"  # a repository or name: any `:` belongs to a host:port


def _why_not(site: Site, traced: Trace, fixed: Mapping[int, str | None], chart: str, target: str) -> str:
    where = f"{chart}: {site.where}"
    if isinstance(tracing.get(traced.base[site.doc].obj, site.path), Mapping):
        return (f"{where}: {site.written} is an object of split fields (an operator joins them); the values "
                "trace does not yet move split objects, so installing the chart would pull it upstream")
    if not site.leaves:
        return f"{where}: {site.written} is hard-coded in the template; installing the chart would pull it upstream"
    blocked = [traced.leaves[i].dotted for i in site.leaves if i in fixed]
    if blocked:
        flows = "; ".join(f"{traced.leaves[i].dotted} -> {', '.join(traced.flows.get(i, ('(untraceable)',))[:2])}"
                          for i in site.leaves if i in fixed)
        return f"{where}: {site.written} is composed from values that also flow into non-image fields ({flows})"
    literal = "".join(p.text for p in site.pattern if p.leaf is None)
    return (f"{where}: {site.written} is composed from {', '.join(traced.leaves[i].dotted for i in site.leaves)} "
            f"with fixed text {literal!r}; no values setting renders {target}")


# --- the closed loop -----------------------------------------------------------------------------


def verify(traced: Trace, moved: Sequence[Moved], relocated: Mapping[tracing.DocKey, Document], find: Find, *,
           host: str, skipped: frozenset[str], chart: str,
           plain: Mapping[tracing.DocKey, Document] | None = None) -> None:
    """Both invariants on the render with the override.

    Raises:
        UnrelocatedImageError: invariant 1 (an image outside the local registry, not accepted).
        OverrideSideEffectError: invariant 2 (a difference that is not an image reference).
    """
    plain = traced.base if plain is None else plain
    if relocated.keys() != plain.keys():
        extra = sorted(f"{k[0]}#{k[1]}" for k in relocated.keys() ^ plain.keys())
        raise OverrideSideEffectError(f"{chart}: the values override changes which documents render: {extra[:3]}",
                                      hint="report this chart: a value that composes an image also switches a template")
    accepted = {(m.site.doc, m.site.path) for m in moved if m.how == "accepted"}
    spans_after: dict[tuple[tracing.DocKey, Path_], list[tuple[int, int] | None]] = {}
    split_after: set[tuple[tracing.DocKey, Path_]] = set()  # split objects: their fields are the image
    for key, doc in relocated.items():
        for finding in find(doc):
            place = (key, tuple(finding.path))
            ref = getattr(finding, "ref", None)
            if ref is not None and ref.domain != host and ref.canonical not in skipped and place not in accepted:
                raise UnrelocatedImageError(
                    f"{chart}: {key[0]} ({doc.kind}/{doc.name}) {format_path(place[1])}: the chart with its values "
                    f"override still pulls {finding.written} from outside {host}",
                    hint="the values that compose it were not found; accept it with charts[].acceptHardcoded "
                         "or report the chart")
            spans_after.setdefault(place, []).append(getattr(finding, "span", None))
            if getattr(finding, "compose", None) is not None:
                split_after.add(place)
    spans_before: dict[tuple[tracing.DocKey, Path_], list[tuple[int, int] | None]] = {}
    split_before: set[tuple[tracing.DocKey, Path_]] = set()
    for key, doc in plain.items():
        for finding in find(doc):
            spans_before.setdefault((key, tuple(finding.path)), []).append(getattr(finding, "span", None))
            if getattr(finding, "compose", None) is not None:
                split_before.add((key, tuple(finding.path)))
    for key, doc in plain.items():
        before, after = tracing.flatten(doc.obj), tracing.flatten(relocated[key].obj)
        for path in sorted(before.keys() | after.keys(), key=str):
            old, new = before.get(path), after.get(path)
            if old == new or (key, path) in traced.noise:
                continue
            place = (key, path)
            if (key, path[:-1]) in split_before and (key, path[:-1]) in split_after:
                continue  # a field of an operator's split object, which invariant 1 checked as an image
            if (old is not None and new is not None and place in spans_before and place in spans_after
                    and _without(old, spans_before[place]) == _without(new, spans_after[place])):
                continue  # only the image references in this string changed
            raise OverrideSideEffectError(
                f"{chart}: {key[0]} ({doc.kind}/{doc.name}) {format_path(path)}: the values override changes "
                f"{old!r} to {new!r}, which is not an image reference",
                hint="report this chart; the override must change image references and nothing else")


def _without(text: str, spans: Sequence[tuple[int, int] | None]) -> str:
    """`text` with its image references cut out (a None span is the whole string)."""
    if any(span is None for span in spans):
        return ""
    out, pos = [], 0
    for start, end in sorted(s for s in spans if s is not None):
        out.append(text[pos:start])
        pos = max(pos, end)
    return "\x00".join([*out, text[pos:]])


# --- output --------------------------------------------------------------------------------------


def values_yaml(values: Mapping[str, Any]) -> str:
    """The override as a values file, with a header that says what it is."""
    y = yaml_rt()
    buf = io.StringIO()
    buf.write("# Generated by airgap-bundle: this chart's images on the cluster-local registry, set through the\n"
              "# values that compose them (found by tracing renders). It changes image references and nothing else.\n")
    y.dump(_commented(values), buf)
    return buf.getvalue()


def _commented(node: Any) -> Any:
    if isinstance(node, Mapping):
        out = CommentedMap()
        for key in sorted(node, key=str):
            out[key] = _commented(node[key])
        return out
    if isinstance(node, list):
        return [_commented(v) for v in node]
    return node
