"""Rendering: Helm charts, Kustomize directories and plain manifests -> `list[Document]` with origins.

Input: a `Spec` (or a `Sources` value with the same three fields: `charts`, `kustomize`, `manifests`)
and a `Tools` value naming the helm and kubectl binaries. Output: the documents, each with an `Origin`:

- charts: `helm template RELEASE CHART --namespace NS --values F... --set K=V... --kube-version V`
  (Helm v4; hooks and test hooks are rendered, `--skip-tests` only when the spec says
  `includeTests: false`). Each document's `Origin.file` is `<chart path>/<template path>` built from
  helm's `# Source:` comment (`examples/charts/demo/templates/deployment.yaml`); `Origin.chart` is the
  chart name with its subchart path (`platform/charts/worker`); `Origin.template` is the `# Source:`
  path as helm prints it. `Origin.line` is the line *within that template's rendered output* (the line
  after `# Source:` is line 1). Helm does not say which template line produced which output line; for
  templates without whitespace-trimming actions before a field, the two are the same.
- kustomize: `kubectl kustomize DIR`; `Origin.file` is the kustomization directory and `Origin.line`
  the line in kustomize's output stream.
- manifests: files, directories (recursive `*.yaml`, `*.yml`, `*.json`), globs, and `-` for standard
  input; `Origin.line` is the real line in the file.

`chart_images(path)` reads the Artifact Hub `helm.sh/images` annotation of a chart and its subcharts
(`Chart.yaml` in directories and `.tgz` archives) and returns it as data; what an image is, and
whether the annotation's entries are valid references, is the sweep's business, not this module's.

Does not know what an image is (that is `sweep.py`) and does not rewrite anything.

Specs: https://helm.sh/docs/helm/helm_template/ ,
https://kubectl.docs.kubernetes.io/references/kubectl/kustomize/ ,
https://artifacthub.io/docs/topics/annotations/helm/ (`artifacthub.io/images`, `helm.sh/images`).
"""

from __future__ import annotations

import bisect
import glob
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import yaml

from .documents import MAX_STREAM_BYTES, Document, Origin, load_stream
from .errors import InputError, RenderError, ToolMissingError

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOL_ENV = {"helm": "AIRGAP_BUNDLE_HELM", "kubectl": "AIRGAP_BUNDLE_KUBECTL"}
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_TIMEOUT = 300.0
IMAGES_ANNOTATION = "helm.sh/images"
_SOURCE_COMMENT = re.compile(r"^# Source: (.*)$", re.M)
MAX_CHART_FILE_BYTES = 4 * 1024 * 1024


class ChartLike(Protocol):
    """What render needs from a chart source (`spec.ChartSource` satisfies it)."""

    @property
    def path(self) -> Path: ...
    @property
    def release(self) -> str: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def values(self) -> tuple[Path, ...]: ...
    @property
    def set(self) -> tuple[str, ...]: ...
    @property
    def kube_version(self) -> str | None: ...
    @property
    def include_tests(self) -> bool: ...
    @property
    def stamp_version(self) -> str | None: ...
    @property
    def stamp_app_version(self) -> str | None: ...


class SourcesLike(Protocol):
    """`spec.Spec` and `Sources` both satisfy this."""

    @property
    def charts(self) -> Sequence[ChartLike]: ...
    @property
    def kustomize(self) -> Sequence[Path]: ...
    @property
    def manifests(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Sources:
    """Sources named on the command line rather than in a spec (same fields as `Spec`)."""

    charts: tuple[ChartLike, ...] = ()
    kustomize: tuple[Path, ...] = ()
    manifests: tuple[str, ...] = ()  # paths, directories, globs, or "-" for standard input


@dataclass(frozen=True)
class Tools:
    """The external binaries. `None` means: look it up with `find_tool` when first needed."""

    helm: str | None = None
    kubectl: str | None = None
    timeout: float = DEFAULT_TIMEOUT

    def get(self, name: str) -> str:
        explicit = {"helm": self.helm, "kubectl": self.kubectl}.get(name)
        return explicit or find_tool(name)


@dataclass(frozen=True)
class ChartImage:
    """One entry of a chart's `helm.sh/images` annotation, with where it was written."""

    image: str  # as written; may be invalid (the sweep reports that)
    name: str | None  # the entry's `name:`
    chart: str  # chart name with subchart path, e.g. platform/charts/worker
    file: str  # the Chart.yaml (inside a .tgz: `<archive>/<member>`)
    line: int  # line of the entry's `image:` in that file
    index: int  # position in the annotation's list


def find_tool(name: str, *, root: Path = REPO_ROOT, environ: Mapping[str, str] | None = None) -> str:
    """Path of `helm` or `kubectl`: `$AIRGAP_BUNDLE_HELM`/`$AIRGAP_BUNDLE_KUBECTL`, then PATH, then
    `<root>/.tools/bin` (where `scripts/setup.sh` puts them in a checkout; `root` is the folder that holds
    the `bundler` package).

    Raises:
        ToolMissingError: the tool is nowhere to be found, or the variable names no executable.
    """
    env = os.environ if environ is None else environ
    var = TOOL_ENV.get(name, name.upper())
    explicit = env.get(var, "")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise ToolMissingError(f"{var}={explicit}: not an executable file", hint=tool_hint(name, root))
        return explicit
    found = shutil.which(name, path=env.get("PATH", os.defpath))
    if found:
        return found
    local = root / ".tools" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    where = f"${var}, PATH or {local.parent}" if _is_checkout(root) else f"${var} or PATH"
    raise ToolMissingError(f"{name} not found (looked at {where})", hint=tool_hint(name, root))


def _is_checkout(root: Path) -> bool:
    """Running from a clone of the repository (scripts/setup.sh beside the package), not a pip install."""
    return (root / "scripts" / "setup.sh").is_file()


def tool_hint(name: str, root: Path = REPO_ROOT) -> str:
    """What to do about a missing tool, for how this copy of airgap-bundle was installed."""
    var = TOOL_ENV.get(name, name.upper())
    if _is_checkout(root):
        return (f"run scripts/setup.sh (it puts helm v4 and kubectl in .tools/bin), "
                f"or put {name} on PATH, or set {var}")
    what = "helm v4 (https://helm.sh/docs/intro/install/)" if name == "helm" else \
        "kubectl (https://kubernetes.io/docs/tasks/tools/)"
    return f"install {what} and put it on PATH, or set {var} to its path"


@dataclass(frozen=True)
class Rendered:
    """One rendered YAML stream: a chart's `helm template` output, a kustomize build, or one file.

    `text` is kept so the rewrite stage can round-trip it (comments and `# Source:` lines included).
    """

    kind: str  # "chart" | "kustomize" | "manifest"
    name: str  # release, kustomization directory name, or file name
    source: str  # the chart, directory or file, as displayed
    text: str
    documents: tuple[Document, ...]


def render(
    sources: SourcesLike, tools: Tools | None = None, *, stdin_text: str | None = None
) -> list[Document]:
    """Render every source the spec (or `Sources`) names, charts first, then kustomize, then manifests.

    `stdin_text` is the text read for a manifest source `-`.

    Raises:
        InputError: a chart, values file or manifest is missing, unreadable, not UTF-8, too large
            or malformed.
        RenderError: helm or kubectl failed (its own message, on one line), timed out, or is missing.
    """
    return [doc for stream in render_streams(sources, tools, stdin_text=stdin_text) for doc in stream.documents]


def render_streams(
    sources: SourcesLike, tools: Tools | None = None, *, stdin_text: str | None = None
) -> list[Rendered]:
    """`render`, stream by stream, keeping each stream's text. Raises as `render`."""
    tools = tools or Tools()
    out: list[Rendered] = []
    for chart in sources.charts:
        text = helm_template(chart, tools)
        out.append(Rendered("chart", chart.release, display(Path(chart.path)), text,
                            tuple(_split_helm_output(text, Path(chart.path)))))
    for directory in sources.kustomize:
        text = kustomize_build(Path(directory), tools)
        out.append(Rendered("kustomize", Path(directory).name, display(Path(directory)), text,
                            tuple(load_stream(text, Origin(display(Path(directory)), 1, source="kustomize")))))
    for pattern in sources.manifests:
        out.extend(manifest_streams(pattern, stdin_text=stdin_text))
    return out


# --- helm ----------------------------------------------------------------------------------------


def render_chart(chart: ChartLike, tools: Tools) -> list[Document]:
    """`helm template` one chart; documents carry chart, template and the line within the template."""
    return _split_helm_output(helm_template(chart, tools), Path(chart.path))


def render_chart_with(chart: ChartLike, tools: Tools, *extra_values: Path) -> list[Document]:
    """`render_chart` with more values files passed last (the rewrite stage's values override)."""
    return _split_helm_output(helm_template(chart, tools, extra_values=extra_values), Path(chart.path))


def helm_template(chart: ChartLike, tools: Tools, *, extra_values: Sequence[Path] = ()) -> str:
    """The text `helm template` prints for one chart (`extra_values` are passed last, so they win).
    A chart the spec stamps is rendered from a stamped copy (`materialize_chart`)."""
    path = Path(chart.path)
    _check_chart(path)
    if (chart.stamp_version or chart.stamp_app_version):
        with tempfile.TemporaryDirectory(prefix="airgap-chart-") as tmp:
            return _helm_template(chart, materialize_chart(chart, Path(tmp)), tools, extra_values)
    return _helm_template(chart, path, tools, extra_values)


def _check_chart(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{display(path)}: chart not found", hint="give a chart directory or a .tgz archive")
    if path.is_dir() and not (path / "Chart.yaml").is_file():
        raise InputError(
            f"{display(path)}: not a chart (no Chart.yaml)", hint="give a chart directory or a .tgz"
        )


def materialize_chart(chart: ChartLike, dest: Path) -> Path:
    """A chart directory under `dest` that can be changed freely: a copy of the chart directory, or
    the unpacked `.tgz`, with `version`/`appVersion` stamped into Chart.yaml when the spec says so
    (what `helm package --version --app-version` does).

    Raises:
        InputError: the chart is missing or its archive or Chart.yaml cannot be read.
    """
    path = Path(chart.path)
    _check_chart(path)
    if path.is_dir():
        root = dest / path.name
        shutil.copytree(path, root, symlinks=False)
    else:
        try:
            with tarfile.open(path, "r:gz") as archive:
                top = archive.getnames()[0].split("/")[0]
                archive.extractall(dest, filter="data")
        except (tarfile.TarError, OSError, IndexError) as exc:
            raise InputError(f"{display(path)}: not a readable chart archive: {exc}") from None
        root = dest / top
    if chart.stamp_version or chart.stamp_app_version:
        meta_file = root / "Chart.yaml"
        meta = yaml.safe_load(read_text(meta_file, MAX_CHART_FILE_BYTES)) or {}
        if chart.stamp_version:
            meta["version"] = chart.stamp_version
        if chart.stamp_app_version:
            meta["appVersion"] = chart.stamp_app_version
        meta_file.write_text(yaml.safe_dump(meta, sort_keys=False))
    return root


def _helm_template(chart: ChartLike, path: Path, tools: Tools, extra_values: Sequence[Path]) -> str:
    args = [tools.get("helm"), "template", chart.release, str(path)]
    if chart.namespace:
        args += ["--namespace", chart.namespace]
    for values in chart.values:
        if not Path(values).is_file():
            raise InputError(
                f"{display(Path(values))}: values file not found (chart {display(path)})",
                hint="check the path of the values file",
            )
        args += ["--values", str(values)]
    for assignment in chart.set:
        args += ["--set", assignment]
    if chart.kube_version:
        args += ["--kube-version", chart.kube_version]
    for values in extra_values:
        args += ["--values", str(values)]
    if not chart.include_tests:
        args.append("--skip-tests")
    return _run(args, f"helm template {display(Path(chart.path))}", tools.timeout)


def split_helm_output(text: str, chart_path: Path) -> list[Document]:
    """`helm template` output as documents with chart, template and line (see `_split_helm_output`)."""
    return _split_helm_output(text, chart_path)


def _split_helm_output(text: str, chart_path: Path) -> list[Document]:
    """Give each document of `helm template` output the template its `# Source:` comment names.

    Helm prints every document of a template as its own `---` / `# Source:` chunk (hooks after the
    rest). Lines count on from the previous chunks of the same template (plus one for the `---`
    between them), so a template of several documents gets lines as in its own rendered output.
    """
    sources: list[tuple[int, str]] = []  # (0-based line of the comment, template path)
    line, pos = 0, 0
    for match in _SOURCE_COMMENT.finditer(text):  # a regex scan: far cheaper than splitting every line
        line += text.count("\n", pos, match.start())
        pos = match.start()
        sources.append((line, match.group(1).strip()))
    total_lines = text.count("\n") + (0 if text.endswith("\n") or not text else 1)
    offsets: list[int] = []  # per chunk: lines of the earlier chunks of the same template
    seen: dict[str, int] = {}
    for at, (comment_line, template) in enumerate(sources):
        offsets.append(seen.get(template, 0))
        end = sources[at + 1][0] - 1 if at + 1 < len(sources) else total_lines  # the next `---`
        seen[template] = offsets[-1] + (end - comment_line - 1) + 1
    starts = [number for number, _ in sources]
    shown = display(chart_path)  # resolves the path: once per chart, not per document
    stream = load_stream(text, Origin(f"helm template {shown}", 1, source="chart"))
    docs: list[Document] = []
    places: dict[str, Origin] = {}  # per template: its chart and file (computed once)
    for doc in stream:
        start = doc.node.start_mark.line if doc.node is not None else doc.origin.line - 1
        at = bisect.bisect_right(starts, start) - 1
        if at < 0:  # helm always writes `# Source:`; keep the document rather than lose it
            docs.append(doc)
            continue
        comment_line, template = sources[at]
        template_line = offsets[at] + start - comment_line
        if template not in places:
            places[template] = _chart_origin(shown, template, 0)
        place = places[template]
        docs.append(Document(doc.obj, Origin(place.file, template_line, place.chart, place.template, place.source),
                             doc.node))
    return docs


def _chart_origin(shown_chart_path: str, template: str, line: int) -> Origin:
    """`demo/charts/worker/templates/ds.yaml` -> chart `demo/charts/worker`, file under the chart path."""
    parts = PurePosixPath(template).parts
    cut = next((i for i in range(len(parts) - 1, -1, -1) if parts[i] == "templates"), len(parts) - 1)
    chart = "/".join(parts[:cut]) or parts[0]
    file = "/".join([shown_chart_path, *parts[1:]])
    return Origin(file, line, chart=chart, template=template, source="chart")


# --- kustomize -----------------------------------------------------------------------------------


def render_kustomize(directory: Path, tools: Tools) -> list[Document]:
    """`kubectl kustomize DIR`; origin is the directory and the line in kustomize's output."""
    return load_stream(kustomize_build(directory, tools), Origin(display(directory), 1, source="kustomize"))


def kustomize_build(directory: Path, tools: Tools) -> str:
    """The text `kubectl kustomize DIR` prints."""
    if not directory.is_dir():
        raise InputError(f"{display(directory)}: kustomization directory not found")
    return _run([tools.get("kubectl"), "kustomize", str(directory)], f"kubectl kustomize {display(directory)}",
                tools.timeout)


# --- plain manifests -----------------------------------------------------------------------------


def load_manifests(pattern: str, *, stdin_text: str | None = None) -> list[Document]:
    """A file, a directory (recursive), a glob, or `-` (standard input, given as `stdin_text`)."""
    return [doc for stream in manifest_streams(pattern, stdin_text=stdin_text) for doc in stream.documents]


def manifest_streams(pattern: str, *, stdin_text: str | None = None) -> list[Rendered]:
    """One `Rendered` per file a manifest source names (`-`: standard input)."""
    if pattern == "-":
        text = stdin_text or ""
        return [Rendered("manifest", "stdin", "<stdin>", text, tuple(load_stream(text, Origin("<stdin>", 1))))]
    out = []
    for path in expand_manifests(pattern):
        text = read_text(path)
        out.append(Rendered("manifest", path.name, display(path), text,
                            tuple(load_stream(text, Origin(display(path), 1)))))
    return out


def expand_manifests(pattern: str) -> list[Path]:
    """The files a manifest source names, sorted.

    Raises:
        InputError: nothing matches.
    """
    path = Path(pattern)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES)
    elif path.exists():
        files = [path]
    elif glob.has_magic(pattern):
        files = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    else:
        raise InputError(f"{pattern}: manifest file not found")
    if not files:
        raise InputError(
            f"{pattern}: no manifest files (*.yaml, *.yml, *.json) match", hint="check the path or glob"
        )
    return files


def read_text(path: Path, limit: int = MAX_STREAM_BYTES) -> str:
    """A UTF-8 text file, size-checked before reading.

    Raises:
        InputError: missing, unreadable, larger than `limit`, or not UTF-8.
    """
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(
                f"{display(path)}: {size} bytes is larger than the {limit} byte limit", hint="split the file"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{display(path)}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{display(path)}:{line}: not UTF-8 (byte {exc.start})", hint="save the file as UTF-8"
        ) from None


# --- helm.sh/images ------------------------------------------------------------------------------


def chart_images(chart_path: Path) -> list[ChartImage]:
    """The `helm.sh/images` annotation entries of a chart and all its subcharts (dirs and `.tgz`).

    Raises:
        InputError: the chart or a Chart.yaml is missing or malformed.
    """
    path = Path(chart_path)
    if not path.exists():
        raise InputError(f"{display(path)}: chart not found", hint="give a chart directory or a .tgz archive")
    found: list[ChartImage] = []
    for file, text, chart in _chart_files(path):
        found.extend(_annotation_images(file, text, chart))
    return found


def _chart_files(path: Path) -> Iterable[tuple[str, str, str]]:
    """(display file, Chart.yaml text, chart name path) for the chart and every subchart."""
    if path.is_dir():
        yield from _chart_dir_files(path, parent=None)
    else:
        yield from _chart_tgz_files(path, parent=None, data=None)


def _chart_dir_files(path: Path, parent: str | None) -> Iterable[tuple[str, str, str]]:
    chart_file = path / "Chart.yaml"
    if not chart_file.is_file():
        raise InputError(f"{display(path)}: not a chart (no Chart.yaml)")
    text = read_text(chart_file, MAX_CHART_FILE_BYTES)
    name = _chart_name(text, display(chart_file))
    here = f"{parent}/charts/{name}" if parent else name
    yield display(chart_file), text, here
    subcharts = path / "charts"
    if subcharts.is_dir():
        for sub in sorted(subcharts.iterdir()):
            if sub.is_dir() and (sub / "Chart.yaml").is_file():
                yield from _chart_dir_files(sub, here)
            elif sub.is_file() and sub.name.endswith(".tgz"):
                yield from _chart_tgz_files(sub, here, data=None)


def _chart_tgz_files(path: Path, parent: str | None, data: bytes | None) -> Iterable[tuple[str, str, str]]:
    """Chart.yaml files inside a packaged chart: `<name>/Chart.yaml` and `<name>/charts/...` members."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
            charts = sorted(n for n in members if n.endswith("/Chart.yaml"))
            names: dict[str, str] = {}
            for member in sorted(charts, key=lambda n: n.count("/")):
                handle = archive.extractfile(members[member])
                raw = handle.read(MAX_CHART_FILE_BYTES + 1) if handle else b""
                where = f"{display(path)}/{member}"
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise InputError(f"{where}: not UTF-8") from None
                directory = member.rsplit("/", 1)[0]
                name = _chart_name(text, where)
                up = directory.rsplit("/charts/", 1)[0] if "/charts/" in directory else None
                base = names.get(up, parent) if up is not None else parent
                here = f"{base}/charts/{name}" if base else name
                names[directory] = here
                yield where, text, here
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{display(path)}: not a readable chart archive: {exc}") from None


def _chart_name(text: str, where: str) -> str:
    docs = load_stream(text, Origin(where, 1))
    obj = docs[0].obj if docs else None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise InputError(f"{where}: Chart.yaml has no name", hint="a chart needs `name:` in Chart.yaml")
    return str(obj["name"])


def _annotation_images(file: str, text: str, chart: str) -> list[ChartImage]:
    docs = load_stream(text, Origin(file, 1))
    if not docs or docs[0].node is None:  # pragma: no cover - _chart_name parsed this text as a mapping first
        return []
    doc = docs[0]
    annotations = doc.obj.get("annotations") if isinstance(doc.obj, dict) else None
    value = annotations.get(IMAGES_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(value, str):
        return []
    assert doc.node is not None
    node = _value_node(doc.node, ("annotations", IMAGES_ANNOTATION))
    # A block scalar (`|`) starts on the line after its indicator; a plain or quoted one on its own line.
    first = doc.line_of(("annotations", IMAGES_ANNOTATION))
    if node is not None and isinstance(node, yaml.ScalarNode) and node.style in ("|", ">"):
        first += 1
    entries = load_stream(value, Origin(file, first))
    out: list[ChartImage] = []
    items = entries[0].obj if entries else None
    if not isinstance(items, list):
        raise InputError(
            f"{file}:{first}: {IMAGES_ANNOTATION} must be a YAML list of {{name, image}}",
            hint="see https://artifacthub.io/docs/topics/annotations/helm/",
        )
    for index, item in enumerate(items):
        image = item.get("image") if isinstance(item, dict) else item
        name = item.get("name") if isinstance(item, dict) else None
        line = entries[0].line_of((index, "image") if isinstance(item, dict) else (index,))
        out.append(
            ChartImage(
                str(image) if image is not None else "", str(name) if name else None, chart, file, line, index
            )
        )
    return out


def _value_node(node: yaml.Node, path: tuple[str, ...]) -> yaml.Node | None:
    for step in path:
        if not isinstance(node, yaml.MappingNode):  # pragma: no cover - the caller found the value in the object
            return None
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == step:
                node = value
                break
        else:  # pragma: no cover - the caller found the value in the object
            return None
    return node


# --- shared --------------------------------------------------------------------------------------


def display(path: Path) -> str:
    """A path as reports show it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def _run(args: list[str], what: str, timeout: float) -> str:
    """Run a tool; its stdout as text, or a RenderError carrying its stderr on one line."""
    try:
        done = subprocess.run(
            args, capture_output=True, timeout=timeout, check=False, env={**os.environ, "HELM_DEBUG": "false"}
        )
    except subprocess.TimeoutExpired:
        raise RenderError(f"{what}: timed out after {timeout:g} s") from None
    except OSError as exc:  # gone since find_tool, or built for another machine (Exec format error)
        raise ToolMissingError(f"{what}: cannot run {args[0]}: {exc.strerror}",
                               hint=tool_hint(Path(args[0]).name)) from None
    if done.returncode != 0:
        raise RenderError(f"{what} failed: {condense(done.stderr.decode('utf-8', 'replace'))}")
    try:
        return done.stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what}: output is not UTF-8 (byte {exc.start})", hint="a template or manifest is not UTF-8"
        ) from None


def condense(stderr: str, limit: int = 600) -> str:
    """A tool's stderr as one line: no blank lines, no `Error: ` prefix, warnings dropped if errors exist."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Use --debug flag")]
    errors = [ln for ln in lines if not ln.startswith(("WARNING", "walk.go", "W0", "I0"))] or lines
    text = " | ".join(ln.removeprefix("Error: ").removeprefix("error: ") for ln in errors) or "no message"
    return text if len(text) <= limit else text[: limit - 3] + "..."
