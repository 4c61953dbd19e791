"""The Helm delivery path on charts shaped like real ones (tests/fixtures/charts/trace/README.md).

Every chart is relocated with real helm, then checked here independently of `relocate.helm.verify`:
the chart rendered with the override (1) names only local images, each the expected digest-pinned
(or, where the README says so, tag-pinned) reference, and (2) differs from the plain render only in
image references.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from bundler import render, sweep
from bundler.documents import Document, Origin, load_stream
from bundler.errors import OverrideSideEffectError, UnrelocatedImageError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs, local_reference
from bundler.relocate import helm as relocate_helm
from bundler.relocate import trace as tracing
from bundler.spec import AcceptedImage, ChartSource

TRACE = Path(__file__).parent / "fixtures" / "charts" / "trace"
HOST = "registry.airgap.local:5000"


def _digest(ref: ImageRef) -> str:
    return "sha256:" + hashlib.sha256(str(ref).encode()).hexdigest()


def _chart(name: str, **kw: object) -> ChartSource:
    return ChartSource(TRACE / name, "rel", "team", **kw)  # type: ignore[arg-type]


def _local(chart: ChartSource, tools: render.Tools) -> LocalRefs:
    found = sweep.sweep(render.render(render.Sources(charts=(chart,)), tools))
    return LocalRefs({i.ref.canonical: local_reference(i.ref, _digest(i.ref), host=HOST) for i in found.images})


def _template(helm: str, chart: ChartSource, *values: Path) -> list[object]:
    args = [helm, "template", chart.release, str(chart.path), "--namespace", "team"]
    for v in values:
        args += ["-f", str(v)]
    return [d for d in yaml.safe_load_all(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
            if d]


def _masked(doc: object) -> object:
    """The document with every image reference (as the sweep finds it) cut out of its string."""
    docs = load_stream(yaml.safe_dump(doc), Origin("x", 1))
    masked = yaml.safe_load(yaml.safe_dump(doc))
    for finding in sweep.sweep_document(docs[0]):
        node = masked
        for step in finding.path[:-1]:
            node = node[step]
        value = node[finding.path[-1]]
        if isinstance(value, str) and getattr(finding, "span", None):
            start, end = finding.span
            node[finding.path[-1]] = value[:start] + "<image>" + value[end:]
        else:
            node[finding.path[-1]] = "<image>"
    return masked


def _relocate_and_check(helm: str, tmp_path: Path, chart: ChartSource
                        ) -> tuple[relocate_helm.ChartRelocation, dict[str, str], dict[str, object]]:
    """Relocate, then prove both invariants with plain helm. Returns the result, the rendered image
    strings by source reference, and the override as data."""
    tools = render.Tools(helm=helm)
    local = _local(chart, tools)
    result = relocate_helm.relocate_chart(chart, tools, local, host=HOST, find=sweep.sweep_document)
    override = tmp_path / "override.yaml"
    override.write_text(result.override)
    plain, moved = _template(helm, chart), _template(helm, chart, override)
    # invariant 2: same documents, same everything but image references
    assert [_masked(d) for d in plain] == [_masked(d) for d in moved]
    # invariant 1: every image local, except the accepted hard-coded ones
    accepted = {a.ref.canonical for a in chart.accept_hardcoded}
    rendered: dict[str, str] = {}
    for doc_before, doc_after in zip(plain, moved, strict=True):
        before = sweep.sweep_document(load_stream(yaml.safe_dump(doc_before), Origin("x", 1))[0])
        after = sweep.sweep_document(load_stream(yaml.safe_dump(doc_after), Origin("x", 1))[0])
        for b, a in zip(before, after, strict=True):
            assert a.ref.domain == HOST or b.ref.with_default_tag().canonical in accepted, a.written
            rendered[str(b.ref.with_default_tag())] = a.written
    return result, rendered, yaml.safe_load(result.override) or {}


def _pinned(ref: str) -> str:
    parsed = ImageRef.parse(ref)
    return f"{HOST}/{parsed.domain}/{parsed.path}:{parsed.tag}@{_digest(parsed)}"


def test_tag_defaulting_to_app_version_and_a_tag_shared_with_a_label(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("appversion"))
    solver = "quay.io/jetstack/cert-manager-acmesolver:v1.16.2"
    controller = "quay.io/jetstack/cert-manager-controller:v1.16.2"
    # the solver's null tag is set explicitly, digest-pinned, and reaches the controller's flag
    assert rendered[solver] == _pinned(solver)
    assert override["acmesolver"]["image"]["tag"].startswith("v1.16.2@sha256:")
    # image.tag also renders app.kubernetes.io/version: never touched, so the controller is tag-pinned
    assert "tag" not in override["image"]
    assert rendered[controller] == f"{HOST}/quay.io/jetstack/cert-manager-controller:v1.16.2"
    tag_only = [m for m in result.moved if m.how == "tag-only"]
    assert {m.site.written for m in tag_only} == {controller}
    assert "image.tag also reaches" in tag_only[0].note and "app.kubernetes.io/version" in tag_only[0].note
    assert "1 pinned only by tag" in result.summary()


def test_registry_repository_tag_digest_objects_with_a_library_helper(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("bitnami-like"))
    assert override["global"]["security"]["allowInsecureImages"] is True  # the chart's own switch
    assert override["global"]["imageRegistry"] == HOST
    for name in ("redis", "redis-exporter", "os-shell"):
        matching = [v for k, v in rendered.items() if k.startswith(f"docker.io/bitnami/{name}:")]
        assert matching and all(v.startswith(f"{HOST}/docker.io/bitnami/{name}@sha256:") for v in matching)
    assert result.count("digest-field") == 3 and result.count("values") == 0


def test_a_digest_field_is_preferred_to_tag_at_digest(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("digest"))
    controller = override["controller"]["image"]
    assert controller["digest"].startswith("sha256:") and "@" not in str(controller.get("tag", ""))
    assert all(v.startswith(HOST) and "@sha256:" in v for v in rendered.values())
    assert result.count("digest-field") == 2


def test_cr_version_sharing_the_tag_is_left_alone_and_sha_fields_pin(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("operator-cr"))
    prometheus = override["prometheus"]["prometheusSpec"]["image"]
    assert "tag" not in prometheus and len(prometheus["sha"]) == 64  # hex, the chart adds `@sha256:`
    assert rendered["quay.io/prometheus/prometheus:v3.1.0"] == _pinned("quay.io/prometheus/prometheus:v3.1.0")
    reloader = "quay.io/prometheus-operator/prometheus-config-reloader:v0.80.1"
    assert rendered[reloader] == _pinned(reloader)  # inside --prometheus-config-reloader=
    assert result.count("digest-field") == 4


def test_a_naive_tag_at_digest_override_is_caught_by_invariant_2(helm: str, tmp_path: Path) -> None:
    """What a shape-matching override writes: `tag: v3.1.0@sha256:...` breaks the CR's spec.version."""
    chart = _chart("operator-cr")
    tools = render.Tools(helm=helm)
    plain = tracing.keyed(render.render_chart(chart, tools))
    naive = tmp_path / "naive.yaml"
    naive.write_text(yaml.safe_dump({"prometheus": {"prometheusSpec": {"image": {
        "registry": HOST, "repository": "quay.io/prometheus/prometheus", "tag": f"v3.1.0@sha256:{'a' * 64}"}}}}))
    broken = tracing.keyed(render.render_chart_with(chart, tools, naive))
    traced = tracing.Trace((), (), {}, {}, frozenset(), {}, plain)
    with pytest.raises(OverrideSideEffectError, match=r"spec\.version.*not an image reference") as err:
        # the naive file moves only Prometheus: the images it leaves alone are skipped, and only definite
        # images count, so invariant 1 passes and invariant 2 is what must fail
        relocate_helm.verify(traced, [], broken, _definite, host=HOST, skipped=_upstream(plain), chart="operator-cr")
    assert err.value.exit_code == 14
    # with every finding, `v3.1.0@sha256:...` in spec.version even reads as an image left upstream
    with pytest.raises(UnrelocatedImageError, match=r"spec\.version: .*still pulls v3\.1\.0@sha256:"):
        relocate_helm.verify(traced, [], broken, sweep.sweep_document, host=HOST, skipped=_upstream(plain),
                             chart="operator-cr")


def _definite(doc: Document) -> list[sweep.Finding]:
    return [f for f in sweep.sweep_document(doc) if isinstance(f, sweep.Finding) and f.confidence == "definite"]


def _upstream(docs: dict[tracing.DocKey, Document]) -> frozenset[str]:
    """Every image of a render but the Prometheus one (whose spec.image the naive override moves)."""
    return frozenset(f.ref.canonical for doc in docs.values() for f in sweep.sweep_document(doc)
                     if isinstance(f, sweep.Finding) and not f.written.startswith("quay.io/prometheus/"))


def test_invariant_1_refuses_a_render_that_still_pulls_upstream(helm: str) -> None:
    chart = _chart("single-string")
    plain = tracing.keyed(render.render_chart(chart, render.Tools(helm=helm)))
    traced = tracing.Trace((), (), {}, {}, frozenset(), {}, plain)
    with pytest.raises(UnrelocatedImageError, match=r"with its values override still pulls \S+ from outside") as err:
        relocate_helm.verify(traced, [], plain, sweep.sweep_document, host=HOST, skipped=frozenset(),
                             chart="single-string")
    assert err.value.exit_code == 13


def test_subchart_values_under_their_alias(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("alias"))
    assert "session-cache" in override and "query-cache" in override and "cache" not in override
    assert "audit-cache" not in override  # disabled: renders nothing, so nothing to move
    assert rendered["docker.io/valkey/valkey:8.0.2"] == _pinned("docker.io/valkey/valkey:8.0.2")
    assert len(rendered) == 4 and result.count("values") == 4


def test_a_hard_coded_image_fails_unless_accepted(helm: str, tmp_path: Path) -> None:
    chart = _chart("hardcoded")
    tools = render.Tools(helm=helm)
    with pytest.raises(UnrelocatedImageError, match=r"busybox:1.36 is hard-coded.*acceptHardcoded") as err:
        relocate_helm.relocate_chart(chart, tools, _local(chart, tools), host=HOST, find=sweep.sweep_document)
    assert err.value.exit_code == 13
    accepted = _chart("hardcoded", accept_hardcoded=(
        AcceptedImage(ImageRef.parse("busybox:1.36"), "init container of the upstream chart"),))
    result, rendered, _ = _relocate_and_check(helm, tmp_path, accepted)
    assert rendered["docker.io/library/busybox:1.36"] == "busybox:1.36"
    assert "1 accepted as hard-coded" in result.summary()
    assert rendered["ghcr.io/fluxcd/source-controller:v1.4.1"] == _pinned("ghcr.io/fluxcd/source-controller:v1.4.1")


def test_a_template_that_rejects_unexpected_values_is_bisected(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("validating"))
    assert "tag" not in override["image"]  # validated, and it feeds a label and a flag
    assert rendered["registry.k8s.io/external-dns/external-dns:v0.15.1"] == \
        f"{HOST}/registry.k8s.io/external-dns/external-dns:v0.15.1"
    # its digest field flips imagePullPolicy, so it is left alone; the tag carries the digest instead
    assert "digest" not in override["devicePlugin"]["image"]
    assert rendered["nvcr.io/nvidia/k8s-device-plugin:v0.17.0"] == _pinned("nvcr.io/nvidia/k8s-device-plugin:v0.17.0")
    assert result.renders > 5  # bisection costs renders, and they are counted


def test_whole_reference_strings_and_lists_restated_whole(helm: str, tmp_path: Path) -> None:
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("single-string"))
    assert [s["name"] for s in override["sidecars"]] == ["oauth2-proxy", "config-reloader"]
    assert all(s["args"] for s in override["sidecars"])  # the items' other keys, unchanged
    assert override["image"] == _pinned("ghcr.io/dexidp/dex:v2.41.1")
    assert result.count("values") == 5


def test_stamped_app_version_is_what_the_chart_renders(helm: str, tmp_path: Path) -> None:
    chart = _chart("appversion", stamp_version="9.9.9", stamp_app_version="v1.17.0")
    tools = render.Tools(helm=helm)
    images = {str(i.ref) for i in sweep.sweep(render.render(render.Sources(charts=(chart,)), tools)).images}
    assert "quay.io/jetstack/cert-manager-controller:v1.17.0" in images
    result = relocate_helm.relocate_chart(chart, tools, _local(chart, tools), host=HOST, find=sweep.sweep_document)
    assert yaml.safe_load(result.override)["acmesolver"]["image"]["tag"].startswith("v1.17.0@sha256:")
    assert (TRACE / "appversion" / "Chart.yaml").read_text().count("9.9.9") == 0  # the source is untouched


def test_operator_split_objects_composed_from_values(helm: str, tmp_path: Path) -> None:
    """gpu-operator: ClusterPolicy components are {repository, image, version} objects the operator joins;
    the override sets each field so the operator joins the local reference, in its digest form."""
    result, rendered, override = _relocate_and_check(helm, tmp_path, _chart("gpu-operator"))
    for component, source in (("driver", "nvcr.io/nvidia/driver:550.127.08"),
                              ("toolkit", "nvcr.io/nvidia/k8s/container-toolkit:v1.17.3-ubuntu20.04"),
                              ("devicePlugin", "nvcr.io/nvidia/k8s-device-plugin:v0.17.0")):
        ref = ImageRef.parse(source)
        assert override[component]["repository"] == f"{HOST}/{ref.domain}/{ref.path.rsplit('/', 1)[0]}"
        assert override[component]["version"] == _digest(ref)  # NVIDIA: repository/image@version
        assert rendered[source] == f"{HOST}/{ref.domain}/{ref.path}@{_digest(ref)}"
        assert "image" not in override[component]
    operator = "nvcr.io/nvidia/gpu-operator:v24.9.0"
    assert rendered[operator] == _pinned(operator)
    assert "4 images in 4 places" in result.summary() and result.count("digest-field") == 3
