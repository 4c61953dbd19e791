"""Kubernetes documents with the place each came from: the type every reading stage consumes.

`load_stream(text, origin)` parses a YAML stream with libyaml (`CSafeLoader`: the composed nodes
carry line numbers, and it is ~10x faster than pure-Python PyYAML or ruamel; see DESIGN.md
"Performance"). Each `Document` keeps its composed node so a stage can ask for the line of any field
path (`doc.line_of(("spec", "template", "spec", "containers", 0, "image"))`).

Guards: aliases are refused past a small budget (a "billion laughs" stream is an error, not a hang),
and a stream larger than `MAX_STREAM_BYTES` is refused before parsing.

Does not run helm or kubectl (that is `render.py`) and does not know what an image is (`sweep.py`).
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import InputError

try:  # libyaml; fall back to pure Python only where the C extension is missing
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML wheels ship libyaml; a source build may not
    _Loader = yaml.SafeLoader

MAX_STREAM_BYTES = 64 * 1024 * 1024
MAX_ALIASES = 1000
Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Origin:
    """Where a document came from. `line` is the 1-based line of the document start in `file`."""

    file: str
    line: int
    chart: str | None = None  # chart name (and subchart path) for rendered charts
    template: str | None = None  # helm's `# Source:` path, e.g. mychart/templates/deploy.yaml
    source: str = "manifest"  # "chart" | "kustomize" | "manifest" | "spec"


@dataclass(frozen=True)
class Document:
    obj: Any
    origin: Origin
    node: yaml.Node | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", "")) if isinstance(self.obj, dict) else ""

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", "")) if isinstance(self.obj, dict) else ""

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str | None:
        meta = self.obj.get("metadata") if isinstance(self.obj, dict) else None
        ns = meta.get("namespace") if isinstance(meta, dict) else None
        return str(ns) if ns is not None else None

    def line_of(self, path: Path_) -> int:
        """1-based line of the value at `path` in `origin.file` (the document start if unknown)."""
        node = self.node
        if node is None:
            return self.origin.line
        base = node.start_mark.line
        for step in path:
            child = _child(node, step)
            if child is None:
                break
            node = child
        return self.origin.line + (node.start_mark.line - base)


def _child(node: yaml.Node, step: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(step, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == step:
                return value  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
        return node.value[step]  # type: ignore[no-any-return]
    return None


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def format_path(path: Iterable[str | int]) -> str:
    """`("spec", "containers", 0, "image")` -> `spec.containers[0].image`; keys that are not plain
    words are quoted: `metadata.annotations["helm.sh/images"]`."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _WORD.fullmatch(step):
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step)}]"
    return out


def load_stream(text: str, origin: Origin) -> list[Document]:
    """Parse a YAML stream into documents; empty documents are skipped.

    Raises:
        InputError: malformed YAML (with file and line), too large, or too many aliases.
    """
    if len(text) > MAX_STREAM_BYTES:
        raise InputError(
            f"{origin.file}: {len(text)} bytes is larger than the {MAX_STREAM_BYTES} byte limit for one YAML stream",
            hint="split the file",
        )
    # Aliases need anchors: a stream without '&' (nearly every rendered manifest) skips the guards.
    guarded = "&" in text
    if guarded and text.count("*") > MAX_ALIASES and _alias_count(text) > MAX_ALIASES:
        raise InputError(
            f"{origin.file}: more than {MAX_ALIASES} YAML aliases; refusing a possible alias bomb",
            hint="expand the aliases or split the file",
        )
    docs: list[Document] = []
    loader = _Loader(text)
    # Each Document keeps its composed nodes (for line numbers): millions of live objects that make
    # CPython's cyclic GC rescan the heap again and again (measured: 3.7x the parse time on 10,000
    # documents). Nodes hold no cycles, so the collector is paused while parsing.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() said a node follows
                continue
            if guarded:
                _check_expansion(node, origin)
            obj = loader.construct_document(node)
            if obj is None:
                continue
            docs.append(Document(obj, Origin(
                origin.file, origin.line + node.start_mark.line, origin.chart, origin.template, origin.source,
            ), node))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = origin.line + mark.line if mark is not None else origin.line
        raise InputError(f"{origin.file}:{line}: malformed YAML: {exc.problem or exc.context}",
                         hint="fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{origin.file}: malformed YAML: {exc}", hint="fix the YAML syntax") from None
    finally:
        loader.dispose()
        if gc_was_enabled:
            gc.enable()
    return docs


def _alias_count(text: str) -> int:
    count = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            count += 1
    return count


def _check_expansion(root: yaml.Node, origin: Origin, limit: int = 1_000_000) -> None:
    """Refuse a document whose node graph (aliases expanded) exceeds `limit` nodes."""
    seen = 0
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            raise InputError(
                f"{origin.file}:{origin.line + root.start_mark.line + 1}: document expands to more than "
                f"{limit} nodes; refusing a possible alias bomb",
                hint="expand the aliases or split the document",
            )
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.append(k)
                stack.append(v)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def iter_documents(docs: list[Document]) -> Iterator[Document]:
    """Documents, with `kind: List` items flattened (kubectl prints Lists)."""
    for doc in docs:
        if doc.kind == "List" and isinstance(doc.obj.get("items"), list):
            for index, item in enumerate(doc.obj["items"]):
                item_node = None
                if doc.node is not None:
                    items = _child(doc.node, "items")
                    item_node = _child(items, index) if items is not None else None
                line = doc.line_of(("items", index))
                yield Document(item, Origin(doc.origin.file, line, doc.origin.chart, doc.origin.template,
                                            doc.origin.source), item_node)
        else:
            yield doc
