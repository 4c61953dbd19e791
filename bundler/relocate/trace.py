"""Which chart values compose each image: found by rendering, not by guessing from the values' shape.

Input: a `Renderer` (a function that runs `helm template` with one extra values mapping and returns its
text, or raises `RenderError`), the chart's effective values (`effective_values`: chart defaults, user
values files and `--set`, subcharts under their alias, `global`), and a finder that locates image
references in one document (`sweep.sweep_document`). Output: a `Trace`:

- `sites`: every image reference in the plain render, each with the `pattern` that composes it: literal
  text and the value leaves that fill it in (`docker.io/` + `image.repository` + `:` + `image.tag`).
  A site whose pattern holds no leaf is hard-coded in a template.
- `flows`: for each leaf, the non-image places it also reaches (a label, a CR `spec.version`, a
  command line). A value that flows elsewhere must not change, or the override would change more
  than image references.

How: each candidate leaf (a value that can plausibly reach an image: its key says image, registry,
repository, tag, digest or version, or its text is part of an image string) is set to a unique
sentinel (`zqz0001q`), all at once, and the render is compared with the plain one document by
document (same template, same position). Null leaves, such as a tag that defaults to
`.Chart.AppVersion`, are set too, so the default is seen to be overridable. When a template
rejects a sentinel (`fail`, `required`, a regex or semver check) or the render changes shape, the
leaves are bisected to find the ones at fault; each is tried once more with the sentinel appended
to its value as semver build metadata (`1.2.3+zqz0001q`), which most validations accept, and left
out (untraceable) otherwise. A chart whose values all render cleanly costs three renders here (two
plain, one perturbed) plus the values dump.

Does not decide the override (that is `helm.py`) and runs no process itself.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..documents import Document, Path_, format_path
from ..errors import RenderError

SENTINEL = re.compile(r"zqz(\d{4})q")
# Keys whose values are image parts. `imagePullPolicy`, `pullSecrets`, labels and ports are not.
PLAUSIBLE_KEY = re.compile(r"image|registry|repo|tag|digest|sha|version|hub", re.IGNORECASE)
NOT_AN_IMAGE_PART = re.compile(r"pull|policy|secret|label|annotation|port|enabled|kubeversion|apiversion",
                               re.IGNORECASE)
MAX_LEAF_TEXT = 256

Renderer = Callable[[Mapping[str, Any]], Sequence[Document]]  # extra values -> rendered documents
Finder = Callable[[Document], Iterable[Any]]  # a document -> findings with `.path` (and `.span`)
DocKey = tuple[str, int]  # (template, ordinal among that template's documents)


def sentinel(index: int) -> str:
    return f"zqz{index:04d}q"


@dataclass(frozen=True)
class Leaf:
    """One scalar of the effective values, by path (`("image", "tag")`, `("sidecars", 0, "image")`)."""

    path: Path_
    value: Any  # str, int, float or None

    @property
    def dotted(self) -> str:
        return format_path(self.path)

    @property
    def key(self) -> str:
        return next((str(p) for p in reversed(self.path) if isinstance(p, str)), "")


@dataclass(frozen=True)
class Piece:
    """Part of an image string as the chart composes it: literal text, or one leaf's value."""

    text: str = ""
    leaf: int | None = None  # index into Trace.leaves


@dataclass(frozen=True)
class Site:
    """One image reference in the plain render."""

    doc: DocKey
    kind: str
    name: str
    path: Path_
    span: tuple[int, int] | None  # the reference inside the string at `path` (None: the whole string)
    written: str  # the reference as rendered (for a field of a split object: the field's text)
    pattern: tuple[Piece, ...]  # how it is composed; all literal = hard-coded in a template
    image: str = ""  # the reference (for a split object's field: the one the operator joins)
    split: Path_ | None = None  # a field of the split object at this path
    compose: Any = field(default=None, compare=False)  # its `catalogue.Composition`

    @property
    def leaves(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(p.leaf for p in self.pattern if p.leaf is not None))

    @property
    def where(self) -> str:
        return f"{self.doc[0]} ({self.kind}/{self.name}) {format_path(self.path)}"


@dataclass(frozen=True)
class Trace:
    leaves: tuple[Leaf, ...]
    sites: tuple[Site, ...]
    flows: Mapping[int, tuple[str, ...]]  # leaf -> non-image places it reaches
    perturbed: Mapping[int, str]  # leaf -> the value it was traced with (untraceable leaves are absent)
    noise: frozenset[tuple[DocKey, Path_]]  # places that differ between two plain renders
    rendered: Mapping[int, str]  # leaf -> the text it renders as in the plain render, where seen
    base: Mapping[DocKey, Document] = field(compare=False)


def trace(render: Renderer, values: Mapping[str, Any], find: Finder) -> Trace:
    """Trace which values compose each image of a chart.

    Raises:
        RenderError: the plain render fails (the chart does not render as configured).
    """
    base = keyed(render({}))
    noise = _differences(base, keyed(render({})))
    found = {key: list(find(doc)) for key, doc in base.items()}
    image_texts = [_site_text(doc.obj, f) for key, doc in base.items() for f in found[key]]
    leaves = tuple(candidatescalars(values, image_texts))

    perturbed: dict[int, str] = {i: sentinel(i) for i in range(len(leaves))}
    rendered, bad = _render_clean(render, values, leaves, perturbed, base)
    for i in bad:  # second chance: keep the value, append the sentinel as semver build metadata
        if isinstance(leaves[i].value, str) and leaves[i].value:
            perturbed[i] = f"{leaves[i].value}+{sentinel(i)}"
        else:
            del perturbed[i]
    if any(i in perturbed for i in bad):
        rendered, still = _render_clean(render, values, leaves, perturbed, base)
        for i in still:
            del perturbed[i]
    switches: dict[int, set[str]] = {}
    effects = _side_effects(base, rendered or base, noise, found)
    if effects:  # a value that changes more than strings it appears in (a branch on a digest, ...)
        switches = _culprits(render, values, leaves, perturbed, sorted(perturbed), base, noise, found, effects)
        for leaf in switches:
            del perturbed[leaf]
        rendered, still = _render_clean(render, values, leaves, perturbed, base)
        for i in still:
            del perturbed[i]
    rendered = rendered or base  # None only when every leaf was dropped

    sites: list[Site] = []
    flows: dict[int, set[str]] = {}
    rendered_as: dict[int, str] = {}
    for key, doc in base.items():
        other = rendered[key].obj
        image_paths: dict[Path_, list[Any]] = {}
        for finding in found[key]:
            image_paths.setdefault(tuple(finding.path), []).append(finding)
        split_objects = {tuple(f.path) for f in found[key] if getattr(f, "compose", None) is not None}
        for path, text in _strings(other):
            tokens = _tokens(text) | _tokens_in_path(path)
            if not tokens:
                continue
            _learn_rendered(text, get(doc.obj, path), perturbed, rendered_as)
            if path[:-1] in split_objects:  # a field of a split object: part of an image
                continue
            findings = image_paths.get(path)
            reached = tokens if not findings else _tokens(_outside_images(get(doc.obj, path), text, findings))
            for leaf in reached:
                flows.setdefault(leaf, set()).add(f"{key[0]} ({doc.kind}/{doc.name}) {format_path(path)}")
        for finding in found[key]:
            sites.extend(_sites(key, doc, other, finding, perturbed))
    for leaf, places in switches.items():
        flows.setdefault(leaf, set()).update(f"switches {p}" for p in places)
    return Trace(leaves, tuple(sites), {k: tuple(sorted(v)) for k, v in flows.items()}, perturbed, noise,
                 rendered_as, base)


# --- values --------------------------------------------------------------------------------------


def candidatescalars(values: Mapping[str, Any], image_texts: Sequence[str]) -> list[Leaf]:
    """Leaves that can plausibly reach an image. `global` copies inside subchart sections are left
    out: the top-level `global` is the one a values file sets."""
    out: list[Leaf] = []
    for path, value in scalars(values, ()):
        if any(step == "global" for step in path[1:]):
            continue
        if isinstance(value, bool) or not (value is None or isinstance(value, (str, int, float))):
            continue
        text = "" if value is None else str(value)
        if len(text) > MAX_LEAF_TEXT or any(c.isspace() for c in text):
            continue
        leaf = Leaf(path, value)
        if NOT_AN_IMAGE_PART.search(leaf.key):
            continue
        if PLAUSIBLE_KEY.search(leaf.key) or (len(text) >= 3 and any(text in t for t in image_texts)):
            out.append(leaf)
    return out


def scalars(node: Any, path: Path_ = ()) -> Iterable[tuple[Path_, Any]]:
    """Every scalar of a values tree with its path (lists by index)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from scalars(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from scalars(value, (*path, i))
    else:
        yield path, node


def values_patch(values: Mapping[str, Any], changes: Mapping[Path_, Any]) -> dict[str, Any]:
    """A values mapping that sets each path in `changes` and nothing else. Helm replaces lists whole,
    so a path through a list carries the whole list (from `values`) with the change in it."""
    out: dict[str, Any] = {}
    for path, value in changes.items():
        node: Any = out
        source: Any = values
        for step, nxt in zip(path, path[1:], strict=False):
            source = source[step] if source is not None else None
            if isinstance(node, list):
                node = node[step]  # type: ignore[index]
            elif isinstance(nxt, int):
                if step not in node:
                    node[step] = copy.deepcopy(source)
                node = node[step]
            else:
                node = node.setdefault(step, {})
        node[path[-1]] = value
    return out


# --- rendering -----------------------------------------------------------------------------------


def keyed(docs: Iterable[Document]) -> dict[DocKey, Document]:
    """Documents by (template, ordinal): the same document in two renders of one chart."""
    out: dict[DocKey, Document] = {}
    seen: dict[str, int] = {}
    for doc in docs:
        template = doc.origin.template or doc.origin.file
        n = seen.get(template, 0)
        seen[template] = n + 1
        out[(template, n)] = doc
    return out


def _render_clean(render: Renderer, values: Mapping[str, Any], leaves: Sequence[Leaf], perturbed: dict[int, str],
                  base: Mapping[DocKey, Document]) -> tuple[dict[DocKey, Document] | None, list[int]]:
    """Render with every leaf in `perturbed` set; bisect the leaves whose sentinel breaks the render
    or its shape. Returns the render of all the good leaves together and the bad leaves."""
    bad: list[int] = []
    pending = sorted(perturbed)
    while True:
        good = [i for i in pending if i not in bad]
        if not good:
            return None, bad
        docs = _try(render, values, leaves, perturbed, good, base)
        if docs is not None:
            return docs, bad
        bad.extend(_bisect(render, values, leaves, perturbed, good, base))


def _bisect(render: Renderer, values: Mapping[str, Any], leaves: Sequence[Leaf], perturbed: Mapping[int, str],
            group: list[int], base: Mapping[DocKey, Document]) -> list[int]:
    """One leaf of `group` (which fails as a whole) that fails on its own: one render per halving, as
    when the first half renders the fault is in the second. `_render_clean` renders the rest again
    and comes back for the next."""
    if len(group) == 1:
        return group
    half = len(group) // 2
    first, second = group[:half], group[half:]
    if _try(render, values, leaves, perturbed, first, base) is not None:
        return _bisect(render, values, leaves, perturbed, second, base)
    return _bisect(render, values, leaves, perturbed, first, base)  # the caller renders the rest again


def _try(render: Renderer, values: Mapping[str, Any], leaves: Sequence[Leaf], perturbed: Mapping[int, str],
         group: Sequence[int], base: Mapping[DocKey, Document]) -> dict[DocKey, Document] | None:
    try:
        docs = keyed(render(values_patch(values, {leaves[i].path: perturbed[i] for i in group})))
    except RenderError:
        return None
    if docs.keys() != base.keys() or any(docs[k].kind != base[k].kind for k in docs):
        return None  # a value switched a template on or off: not a value that only feeds an image
    return docs


def _side_effects(base: Mapping[DocKey, Document], other: Mapping[DocKey, Document],
                  noise: frozenset[tuple[DocKey, Path_]], found: Mapping[DocKey, list[Any]]) -> set[str]:
    """Places that differ from the plain render but hold no sentinel and no image: what a value
    changed by steering a template rather than by being printed."""
    out: set[str] = set()
    for key, doc in base.items():
        images = {tuple(f.path) for f in found[key]}
        before, after = flatten(doc.obj), flatten(other[key].obj)
        for path in before.keys() | after.keys():
            new = after.get(path)
            if before.get(path) == new or (key, path) in noise or path in images:
                continue
            if (new is not None and _tokens(new)) or _tokens_in_path(path):
                continue
            if new is None and any(_tokens_in_path(p) for p in after if p[:len(path) - 1] == path[:-1]):
                continue  # a key renamed by a sentinel: reported as a flow already
            out.add(f"{key[0]} ({doc.kind}/{doc.name}) {format_path(path)}")
    return out


def _culprits(render: Renderer, values: Mapping[str, Any], leaves: Sequence[Leaf], perturbed: Mapping[int, str],
              group: list[int], base: Mapping[DocKey, Document], noise: frozenset[tuple[DocKey, Path_]],
              found: Mapping[DocKey, list[Any]], effects: set[str]) -> dict[int, set[str]]:
    """The leaves whose sentinel alone causes some of `effects` (bisected: a few renders per culprit)."""
    docs = _try(render, values, leaves, perturbed, group, base)
    seen = _side_effects(base, docs, noise, found) & effects if docs is not None else effects
    if not seen:
        return {}
    if len(group) == 1:
        return {group[0]: seen}
    half = len(group) // 2
    out = _culprits(render, values, leaves, perturbed, group[:half], base, noise, found, seen)
    out.update(_culprits(render, values, leaves, perturbed, group[half:], base, noise, found, seen))
    return out or {group[0]: seen}  # only together: give up the first leaf


# --- comparing renders ---------------------------------------------------------------------------


def _strings(node: Any, path: Path_ = ()) -> Iterable[tuple[Path_, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _strings(value, (*path, i))
    elif node is not None:
        yield path, str(node)


def flatten(obj: Any) -> dict[Path_, str]:
    return dict(_strings(obj))


def _differences(a: Mapping[DocKey, Document], b: Mapping[DocKey, Document]) -> frozenset[tuple[DocKey, Path_]]:
    out: set[tuple[DocKey, Path_]] = set()
    for key in a.keys() & b.keys():
        fa, fb = flatten(a[key].obj), flatten(b[key].obj)
        out.update((key, p) for p in fa.keys() ^ fb.keys())
        out.update((key, p) for p in fa.keys() & fb.keys() if fa[p] != fb[p])
    return frozenset(out)


def _tokens(text: str) -> set[int]:
    return {int(m.group(1)) for m in SENTINEL.finditer(text)}


def _tokens_in_path(path: Path_) -> set[int]:
    return {t for step in path if isinstance(step, str) for t in _tokens(step)}


def get(obj: Any, path: Path_) -> Any:
    """The value at `path`, or None."""
    for step in path:
        try:
            obj = obj[step]
        except (KeyError, IndexError, TypeError):
            return None
    return obj


def _site_text(obj: Any, finding: Any) -> str:
    value = get(obj, tuple(finding.path))
    if not isinstance(value, str):
        return str(getattr(finding, "written", ""))
    span = getattr(finding, "span", None)
    return value[span[0]:span[1]] if span else value


def _split_around(base_text: str, span: tuple[int, int] | None, text: str) -> tuple[str, str, str] | None:
    """`text` (perturbed) as (before, image, after), where before/after are the literal text around the
    reference in `base_text`. None when the surroundings changed too."""
    if span is None:
        return "", text, ""
    before, after = base_text[:span[0]], base_text[span[1]:]
    if text.startswith(before) and text.endswith(after) and len(text) >= len(before) + len(after):
        return before, text[len(before):len(text) - len(after)], after
    return None


def _outside_images(base_value: Any, text: str, findings: Sequence[Any]) -> str:
    """The part of a perturbed string that is not one of its image references."""
    spans = sorted((f.span for f in findings if getattr(f, "span", None)), key=lambda s: s[0])
    if not isinstance(base_value, str) or not spans or any(getattr(f, "span", None) is None for f in findings):
        return ""  # the whole value is the image
    if len(spans) > 1:
        return ""  # several references in one string: their surroundings are literal args, not values
    parts = _split_around(base_value, spans[0], text)
    return text if parts is None else parts[0] + parts[2]


def _sites(key: DocKey, doc: Document, other: Any, finding: Any, perturbed: Mapping[int, str]) -> list[Site]:
    """The site of a finding; for a split object (an operator joins its fields), one site per field."""
    path = tuple(finding.path)
    compose = getattr(finding, "compose", None)
    obj = get(doc.obj, path)
    if compose is None or not isinstance(obj, Mapping):
        return [_site(key, doc, other, finding, perturbed)]
    out = []
    for name in compose.mapping:
        value, text = obj.get(name), get(other, (*path, name))
        written = "" if value is None else str(value)
        pattern = tuple(_pieces(str(text), perturbed)) if text is not None else (Piece(written),)
        out.append(Site(key, doc.kind, doc.name, (*path, name), None, written, pattern, finding.written, path, compose))
    return out


def _site(key: DocKey, doc: Document, other: Any, finding: Any, perturbed: Mapping[int, str]) -> Site:
    path = tuple(finding.path)
    span = getattr(finding, "span", None)
    base_value = get(doc.obj, path)
    written = _site_text(doc.obj, finding)
    text = get(other, path)
    pattern: tuple[Piece, ...] = (Piece(written),)
    if isinstance(text, str) and isinstance(base_value, str):
        parts = _split_around(base_value, span, text)
        if parts is not None:
            pattern = tuple(_pieces(parts[1], perturbed))
    return Site(key, doc.kind, doc.name, path, span, written, pattern, written)


def _pieces(text: str, perturbed: Mapping[int, str]) -> Iterable[Piece]:
    """Literal text and leaves: each sentinel, with the value it was traced with around it."""
    pos = 0
    while pos < len(text):
        match = SENTINEL.search(text, pos)
        if match is None:
            yield Piece(text[pos:])
            return
        leaf = int(match.group(1))
        value = perturbed.get(leaf, match.group(0))
        start = match.end() - len(value)
        if start < pos or text[start:match.end()] != value:
            start = match.start()  # transformed by the template: only the sentinel itself is known
        if start > pos:
            yield Piece(text[pos:start])
        yield Piece(leaf=leaf)
        pos = match.end()


def match_pattern(pattern: Sequence[Piece], text: str, group: Callable[[int], str],
                  fixed: Mapping[int, str] | None = None) -> dict[int, str] | None:
    """The leaf values that fill `pattern` to make `text`, or None. Literal pieces match as they are,
    a `fixed` leaf as its text, every other leaf as the regular expression `group(leaf)` (and, where
    it appears again, as the same text)."""
    fixed = fixed or {}
    regex: list[str] = []
    seen: set[int] = set()
    for piece in pattern:
        if piece.leaf is None:
            regex.append(re.escape(piece.text))
        elif piece.leaf in fixed:
            regex.append(re.escape(fixed[piece.leaf]))
        elif piece.leaf in seen:
            regex.append(f"(?P=l{piece.leaf})")
        else:
            seen.add(piece.leaf)
            regex.append(f"(?P<l{piece.leaf}>{group(piece.leaf)})")
    match = re.fullmatch("".join(regex), text)
    if match is None:
        return None
    return {int(name[1:]): value for name, value in match.groupdict().items() if value is not None}


def _learn_rendered(text: str, base_value: Any, perturbed: Mapping[int, str], out: dict[int, str]) -> None:
    """What each leaf in `text` (perturbed) renders as in `base_value` (plain), when the literal text
    around the leaves pins it down: `v-zqz0003q` over `v-1.2.3` says leaf 3 renders `1.2.3`."""
    if not isinstance(base_value, str):
        return
    pieces = list(_pieces(text, perturbed))
    if len({p.leaf for p in pieces if p.leaf is not None}) > 1 and not all(p.text for p in pieces if p.leaf is None):
        return  # two leaves side by side: where one ends is anyone's guess
    for leaf, value in (match_pattern(pieces, base_value, lambda _: ".*?") or {}).items():
        out.setdefault(leaf, value)
