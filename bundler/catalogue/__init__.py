"""Operator knowledge: where well-known operators keep the images they pull, as data the sweep reads.

Input: catalogue entries, from the package's own `bundler/catalogue/*.yaml` (one file per operator) or
from the spec's `discovery.rules` (the same schema, `schemas/catalogue.schema.json`). Output: a
`Catalogue` of typed `Entry`s, and the matchers the sweep asks:

- `resource_rules(group, kind, obj)`: the custom-resource `fields` (a string that is a reference) and
  `splits` (an object whose parts the operator joins with a `format`) that apply to one object;
- `flag(name, image)` / `env(name, image)`: the entry that says a controller flag or env var of a
  container running `image` holds an image;
- `match_shape(obj)`: the common split-object shapes (`{registry, repository, tag|digest}`,
  `{repository, image, version}`, `{image, tag}`, ...) that the sweep recognises in any custom resource
  without an entry, and whose join is the one nearly every operator and chart uses.

A `Format` is `{a}/{b}:{c}` (the tag form) or `{a}/{b}@{c}` (the digest form): whole `/` components are
placeholders (keys of the object) or literals; the last part is the tag or digest slot. `Format.compose`
joins an object's values; `Format.decompose` is its inverse, used by the rewrite to spread a local
reference over the same fields (the source path is kept as a suffix, so only the first field changes).

Every built-in entry cites the upstream CRD or documentation and the operator versions it was read
from (`sources`); the schema makes that a requirement. Pure code apart from reading the package's data
files (importlib.resources). Does not walk documents (that is `sweep.py`) and does not rewrite them
(`relocate/manifests.py`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from importlib import resources
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from ..errors import SpecError

_PLACEHOLDER = re.compile(r"\{([A-Za-z][A-Za-z0-9_]*)\}")
_HOSTLIKE = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost)(?::[0-9]+)?$")
_DIGEST_VALUE = re.compile(r"^[a-z0-9]+:[0-9a-f]{32,}$")

Step = tuple[Literal["key"], str] | tuple[Literal["list"]] | tuple[Literal["map"]]
Path_ = tuple[str | int, ...]


# --- formats ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Format:
    """How an operator joins an object's fields into a reference: `{repository}/{image}:{version}`."""

    text: str
    name: tuple[str, ...]  # the `/` components of the name: "{key}" placeholders or literals
    slot: str  # the key after the last `:` (tag form) or `@` (digest form)
    digest: bool  # the slot holds a digest (`@`)

    @classmethod
    def parse(cls, text: str) -> Format:
        """Raises ValueError with a reason when `text` is not `NAME:{slot}` or `NAME@{slot}`."""
        match = re.fullmatch(r"(?P<name>.+?)(?P<sep>[:@])\{(?P<slot>[A-Za-z][A-Za-z0-9_]*)\}", text)
        if match is None:
            raise ValueError(f"format {text!r} must end with :{{tag-field}} or @{{digest-field}}")
        name = tuple(match.group("name").split("/"))
        for component in name:
            inner = _PLACEHOLDER.fullmatch(component)
            if inner is None and ("{" in component or "}" in component or not component):
                raise ValueError(f"format {text!r}: a / component is either one {{field}} or a literal")
        return cls(text, name, match.group("slot"), match.group("sep") == "@")

    @property
    def keys(self) -> tuple[str, ...]:
        return (*(k for k in map(_key, self.name) if k is not None), self.slot)

    def compose(self, values: Mapping[str, str]) -> str | None:
        """The reference the operator builds, or None when a field it needs is empty."""
        parts = []
        for component in self.name:
            key = _key(component)
            if key is None:
                parts.append(component)
            elif values.get(key):
                parts.append(values[key].strip("/"))
            else:
                return None
        if not values.get(self.slot):
            return None
        return "/".join(parts) + ("@" if self.digest else ":") + values[self.slot]

    def decompose(self, name: str, values: Mapping[str, str]) -> dict[str, str] | None:
        """New values of the name's fields so that they compose `name`, or None when they cannot.

        The components after the first keep their values (a local registry keeps the source path as a
        suffix: `{host}/{source_host}/{path}`), so only the first field takes the new prefix. A first
        field that held only a registry host (`registry: ghcr.io`) gets the local host alone, and the
        rest of the prefix moves into the second field, so a field that means "host" still holds one.
        """
        first = _key(self.name[0])
        if first is None:
            return None  # the operator hard-codes the host: no field can move it
        rest = []
        for component in self.name[1:]:
            key = _key(component)
            if key is not None and not values.get(key):
                return None
            rest.append(component if key is None else values[key].strip("/"))
        suffix = "/".join(rest)
        if suffix and not name.endswith("/" + suffix):
            return None
        prefix = name[: len(name) - len(suffix) - 1] if suffix else name
        out = {first: prefix}
        second = _key(self.name[1]) if len(self.name) > 1 else None
        if second is not None and _HOSTLIKE.match(values.get(first, "")) and "/" in prefix:
            host, _, more = prefix.partition("/")
            out = {first: host, second: f"{more}/{values[second].strip('/')}"}
        return out


def _key(component: str) -> str | None:
    match = _PLACEHOLDER.fullmatch(component)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Composition:
    """An object's parts and how they join: what a split finding carries to the rewrite."""

    format: Format  # the tag form
    digest_format: Format | None  # the digest form, when the operator has one
    values: tuple[tuple[str, str], ...]  # the object's fields as written
    label: str  # entry id or shape, for reports and Change notes

    @property
    def mapping(self) -> dict[str, str]:
        return dict(self.values)

    def written(self) -> str | None:
        """The reference the operator composes from these values (digest form when the slot holds one)."""
        values = self.mapping
        if self.digest_format is not None and _DIGEST_VALUE.match(values.get(self.digest_format.slot, "")):
            return self.digest_format.compose(values)
        return self.format.compose(values)


# --- entries ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    url: str
    versions: str


@dataclass(frozen=True)
class Selector:
    """Which objects a field or split rule reads: API group, kind, and optionally name or label key."""

    group: str  # "" for the core group; "*" for any
    kind: str  # "*" for any
    name: str | None = None
    label: str | None = None  # a label key the object carries (Velero selects its ConfigMap so)

    def matches(self, group: str, kind: str, obj: Mapping[str, Any]) -> bool:
        if self.group not in ("*", group) or self.kind not in ("*", kind):
            return False
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        if self.name is not None and meta.get("name") != self.name:
            return False
        labels = meta.get("labels")
        return self.label is None or (isinstance(labels, Mapping) and self.label in labels)


@dataclass(frozen=True)
class FieldRule:
    selector: Selector
    path: str
    steps: tuple[Step, ...]
    references_only: bool = False  # the field holds a tag or a reference: only `/` or `@` makes it one


@dataclass(frozen=True)
class SplitRule:
    selector: Selector
    path: str
    steps: tuple[Step, ...]
    format: Format
    digest_format: Format | None = None


@dataclass(frozen=True)
class NameRule:
    """A controller flag (without dashes) or env var name (glob), optionally only in containers whose
    image matches `image` (a glob on the reference as written)."""

    name: str
    image: str | None = None

    def matches(self, name: str, image: str) -> bool:
        return fnmatchcase(name, self.name) and (self.image is None or fnmatchcase(image, self.image))


@dataclass(frozen=True)
class Entry:
    id: str
    operator: str
    sources: tuple[Source, ...]
    fields: tuple[FieldRule, ...] = ()
    splits: tuple[SplitRule, ...] = ()
    flags: tuple[NameRule, ...] = ()
    env: tuple[NameRule, ...] = ()
    file: str = "<catalogue>"
    line: int = 1


@dataclass(frozen=True)
class Catalogue:
    entries: tuple[Entry, ...] = ()

    def extend(self, entries: Iterable[Entry]) -> Catalogue:
        """This catalogue plus `entries` (the spec's `discovery.rules`)."""
        return Catalogue((*self.entries, *entries))

    def resource_rules(
        self, group: str, kind: str, obj: Mapping[str, Any]
    ) -> Iterator[tuple[Entry, FieldRule | SplitRule]]:
        for entry in self.entries:
            rules: tuple[FieldRule | SplitRule, ...] = (*entry.splits, *entry.fields)
            for rule in rules:
                if rule.selector.matches(group, kind, obj):
                    yield entry, rule

    def flag(self, name: str, image: str) -> Entry | None:
        return next((e for e in self.entries for r in e.flags if r.matches(name, image)), None)

    def env(self, name: str, image: str) -> Entry | None:
        return next((e for e in self.entries for r in e.env if r.matches(name, image)), None)


def resolve(obj: Any, steps: Sequence[Step], path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every (path, value) that `steps` reach in `obj`: `key`, `[]` (each list item), `*` (each map value)."""
    if not steps:
        yield path, obj
        return
    step, rest = steps[0], steps[1:]
    if step[0] == "key":
        if isinstance(obj, Mapping) and step[1] in obj:
            yield from resolve(obj[step[1]], rest, (*path, step[1]))
    elif step[0] == "list":
        if isinstance(obj, list):
            for i, item in enumerate(obj):
                yield from resolve(item, rest, (*path, i))
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if isinstance(key, str):
                yield from resolve(value, rest, (*path, key))


def parse_path(text: str) -> tuple[Step, ...]:
    """`spec.containers[].image` / `spec.*.image` -> steps. Raises ValueError on an empty component."""
    steps: list[Step] = []
    for part in text.split("."):
        lists = 0
        while part.endswith("[]"):
            part, lists = part[:-2], lists + 1
        if part == "*":
            steps.append(("map",))
        elif part:
            steps.append(("key", part))
        else:
            raise ValueError(f"path {text!r} has an empty component")
        steps.extend(("list",) for _ in range(lists))
    return tuple(steps)


# --- common split shapes (no entry needed) -------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    format: Format
    digest_format: Format | None  # used only when the object has the digest field

    @property
    def label(self) -> str:
        return self.format.text


def _shape(text: str, digest: str | None = None) -> Shape:
    return Shape(Format.parse(text), Format.parse(digest) if digest else None)


# Most specific first. The digest forms are the ones charts and operators that carry a separate
# `digest` field use (`registry/repository@digest`, e.g. Bitnami's common.images.image helper).
SHAPES = (
    _shape("{registry}/{repository}/{image}:{tag}"),
    _shape("{registry}/{repository}/{image}:{version}"),
    _shape("{registry}/{repository}:{tag}", "{registry}/{repository}@{digest}"),
    _shape("{registry}/{image}:{tag}", "{registry}/{image}@{digest}"),
    _shape("{repository}/{image}:{version}"),
    _shape("{repository}/{image}:{tag}"),
    _shape("{repository}:{tag}", "{repository}@{digest}"),
    _shape("{repository}:{version}"),
    _shape("{image}:{tag}", "{image}@{digest}"),
    _shape("{image}:{version}"),
)


def match_shape(obj: Mapping[str, Any]) -> Composition | None:
    """The first common shape whose fields `obj` has as scalars, joined; None when none fits."""
    values = _scalars(obj)
    for shape in SHAPES:
        names = [k for k in shape.format.keys if k != shape.format.slot]
        if not all(values.get(k) for k in names):
            continue
        # A digest field that is there but empty (`digest: ""`, as charts ship it) still takes a digest.
        digest = shape.digest_format if shape.digest_format and shape.digest_format.slot in obj else None
        if not values.get(shape.format.slot) and digest is None:
            continue
        comp = Composition(shape.format, digest, tuple(sorted(values.items())), f"shape {shape.label}")
        if comp.written() is not None:
            return comp
    return None


def compose(rule: SplitRule, obj: Any, label: str) -> Composition | None:
    """The composition a split rule reads from `obj`, or None when its fields are not all there."""
    if not isinstance(obj, Mapping):
        return None
    comp = Composition(rule.format, rule.digest_format, tuple(sorted(_scalars(obj).items())), label)
    return comp if comp.written() is not None else None


def _scalars(obj: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(k): str(v)
        for k, v in obj.items()
        if isinstance(k, str) and isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v)
    }


# --- loading -------------------------------------------------------------------------------------


@functools.cache
def _validator() -> Any:
    import jsonschema

    text = resources.files("bundler").joinpath("schemas/catalogue.schema.json").read_text()
    return jsonschema.Draft202012Validator(json.loads(text))


def errors(data: Any) -> list[tuple[list[str | int], str]]:
    """Schema violations of one entry, as (field path, message), deepest first."""
    found = sorted(_validator().iter_errors(data), key=lambda e: -len(e.absolute_path))
    return [(list(e.absolute_path), e.message) for e in found]


def entry(data: Mapping[str, Any], *, file: str, line: int = 1,
          line_of: Any = None) -> Entry:
    """An `Entry` from one validated mapping.

    Args:
        line_of: `(path) -> int`, the line of a field, for messages; `line` when not given.

    Raises:
        SpecError: a schema violation, a bad format or path (`file:line: field: message`).
    """
    def fail(where: list[str | int], message: str) -> SpecError:
        at = line_of(where) if line_of is not None else line
        return SpecError(f"{file}:{at}: {_field(where)}: {message}",
                         hint="see schemas/catalogue.schema.json and the entries in bundler/catalogue/")

    problems = errors(json.loads(json.dumps(data, default=str)))
    if problems:
        raise fail(*problems[0])

    def selector(d: Mapping[str, Any]) -> Selector:
        return Selector(str(d["group"]), str(d["kind"]), d.get("name"), d.get("label"))

    def steps(text: str, where: list[str | int]) -> tuple[Step, ...]:
        try:
            return parse_path(text)
        except ValueError as exc:  # pragma: no cover - the schema's path pattern has no empty component
            raise fail(where, str(exc)) from None

    def fmt(text: str, where: list[str | int], digest: bool) -> Format:
        try:
            parsed = Format.parse(text)
        except ValueError as exc:
            raise fail(where, str(exc)) from None
        if parsed.digest != digest:  # pragma: no cover - the schema pins `:` for format and `@` for digestFormat
            raise fail(where, f"{text!r} must end with {'@' if digest else ':'}{{field}}")
        return parsed

    fields = tuple(
        FieldRule(selector(f), f["path"], steps(f["path"], ["fields", n, "path"]), bool(f.get("referencesOnly")))
        for n, f in enumerate(data.get("fields") or ())
    )
    splits = []
    for n, s in enumerate(data.get("splits") or ()):
        tag_form = fmt(s["format"], ["splits", n, "format"], False)
        digest_form = fmt(s["digestFormat"], ["splits", n, "digestFormat"], True) if s.get("digestFormat") else None
        if digest_form is not None and digest_form.name != tag_form.name:
            raise fail(["splits", n, "digestFormat"], "the digest form must join the same name fields as format")
        splits.append(SplitRule(selector(s), s["path"], steps(s["path"], ["splits", n, "path"]), tag_form, digest_form))
    return Entry(
        id=str(data["id"]),
        operator=str(data["operator"]),
        sources=tuple(Source(str(s["url"]), str(s["versions"])) for s in data["sources"]),
        fields=fields,
        splits=tuple(splits),
        flags=tuple(NameRule(str(f["name"]).lstrip("-"), f.get("image")) for f in data.get("flags") or ()),
        env=tuple(NameRule(str(e["name"]), e.get("image")) for e in data.get("env") or ()),
        file=file,
        line=line,
    )


def load_text(text: str, file: str) -> Entry:
    """One catalogue file (one operator).

    Raises:
        SpecError: malformed YAML or an invalid entry, with file and line.
    """
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(f"{file}:{mark.line + 1 if mark else 1}: malformed YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, CommentedMap):
        raise SpecError(f"{file}:1: a catalogue entry must be a mapping")
    return entry(data, file=file, line=1, line_of=lambda where: line_in(data, where))


def load_fast(text: str, file: str) -> Entry:
    """`load_text`, parsed by PyYAML's C loader: about 15 times faster than ruamel's round-trip parser,
    which took 0.3 s of every build for the built-in catalogue. Only line numbers are lost, so anything
    wrong is parsed again with ruamel, whose error names the line. The built-in files are plain YAML that
    both parsers read alike (tests/test_catalogue.py compares the two for every file).

    Raises:
        SpecError: as `load_text`.
    """
    import yaml

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return load_text(text, file)
    if not isinstance(data, dict):
        return load_text(text, file)
    return entry(data, file=file, line=1, line_of=lambda where: line_in(YAML(typ="rt").load(text), where))


@functools.cache
def builtin() -> Catalogue:
    """The catalogue shipped in the package (`bundler/catalogue/*.yaml`), loaded once."""
    folder = resources.files("bundler.catalogue")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return Catalogue(tuple(load_fast(f.read_text(encoding="utf-8"), f"bundler/catalogue/{f.name}") for f in files))


def line_in(data: Any, path: Sequence[str | int], start: int = 1) -> int:
    """1-based line of the deepest node on `path` that ruamel knows a position for."""
    line = start
    node = data
    for step in path:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(node, CommentedMap) and lc is not None and step in node:
                line = lc.key(step)[0] + 1
            elif isinstance(node, CommentedSeq) and lc is not None and isinstance(step, int):
                line = lc.item(step)[0] + 1
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
    return line


def _field(path: Sequence[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out or "(entry)"


__all__ = [
    "SHAPES",
    "Catalogue",
    "Composition",
    "Entry",
    "FieldRule",
    "Format",
    "NameRule",
    "Selector",
    "Source",
    "SplitRule",
    "builtin",
    "compose",
    "entry",
    "errors",
    "line_in",
    "load_text",
    "match_shape",
    "parse_path",
    "resolve",
]
