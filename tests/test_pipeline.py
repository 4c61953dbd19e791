"""The build's gates, each on its own: the stop on unreviewed or invalid references, the closed loop over
rewritten output, the digest pin of every local reference, and the Crossplane gate.

Real sweeps of real YAML, real fixture Crossplane packages and, for the gate's place in the build, a
real offline build (a chart with no image: no registry is needed). Each test names the exact error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import pipeline, sweep
from bundler.documents import Origin, load_stream
from bundler.errors import CrossplaneError, UnrelocatedImageError, UnvendoredImageError, UsageError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs
from bundler.render import Tools
from bundler.spec import CrossplaneConfig, CrossplanePackageSource, ImageOptions, Spec
from bundler.spec import load as load_spec
from tests.support.crossplane import FIXTURES, PACKAGES, REFS

HOST = "registry.airgap.local:5000"
DIGEST = "sha256:" + "a" * 64
V2_AWS = ("provider-family-aws-v2.0.0", "provider-aws-s3-v2.0.0", "function-patch-and-transform-v0.10.0",
          "function-auto-ready-v0.5.0")
V1_AWS = ("provider-family-aws-v1.7.0", "provider-aws-s3-v1.7.0", "function-patch-and-transform-v0.10.0",
          "function-auto-ready-v0.5.0")


def _spec(tmp_path: Path, **fields: object) -> Spec:
    return Spec(path=tmp_path / "bundle.yaml", digest="sha256:" + "0" * 64, document={}, name="t", version="1.0.0",
                local_registry=HOST, **fields)  # type: ignore[arg-type]


def _sweep(text: str, name: str = "m.yaml", **kw: object) -> sweep.Sweep:
    return sweep.sweep(load_stream(text, Origin(name, 1)), **kw)  # type: ignore[arg-type]


def _pod(*images: str) -> str:
    containers = "".join(f"\n  - name: c{n}\n    image: {image}" for n, image in enumerate(images))
    return f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:{containers}\n"


# --- _require_clean_sweep --------------------------------------------------------------------------

def test_clean_sweep_passes() -> None:
    assert pipeline._require_clean_sweep(_sweep(_pod("nginx:1.27")), "bundle.yaml") is None


def test_first_invalid_reference_stops_the_build_with_its_line() -> None:
    found = _sweep(_pod("Bad Ref!", "also:bad:ref"))
    with pytest.raises(UnvendoredImageError) as err:
        pipeline._require_clean_sweep(found, "bundle.yaml")
    assert err.value.message.startswith("m.yaml:7: invalid image reference 'Bad Ref!': invalid reference format")
    assert err.value.hint == "fix the reference in the source"


CANDIDATES = """apiVersion: example.org/v1
kind: Thing
metadata: {name: t}
spec:
  note: "quay.io/team/tool:1.2"
  other: "ghcr.io/org/helper:2.0"
"""


def test_unreviewed_candidate_stops_the_build_and_counts_the_others() -> None:
    found = _sweep(CANDIDATES)
    assert [c.written for c in found.candidates] == ["ghcr.io/org/helper:2.0", "quay.io/team/tool:1.2"]
    with pytest.raises(UnvendoredImageError) as err:
        pipeline._require_clean_sweep(found, "bundle.yaml")
    assert err.value.message == ("m.yaml:6: ghcr.io/org/helper:2.0 looks like an image (cr-string) but the spec neither "
                                 "confirms nor excludes it (2 unresolved candidate(s))")
    assert err.value.hint == ("review: `airgap-bundle sweep bundle.yaml --emit-images` prints the images: entries to "
                              "paste (confirm: true, or exclude: <reason>)")


def test_confirmed_or_excluded_candidates_pass() -> None:
    options = [ImageOptions(ImageRef.parse("ghcr.io/org/helper:2.0"), confirm=True),
               ImageOptions(ImageRef.parse("quay.io/team/tool:1.2"), exclude="documentation only")]
    pipeline._require_clean_sweep(_sweep(CANDIDATES, options=options), "bundle.yaml")


# --- _require_local: the closed loop ---------------------------------------------------------------

def test_closed_loop_passes_local_output_and_returns_one_sweep_per_text(tmp_path: Path) -> None:
    local = f"{HOST}/docker.io/library/nginx:1.27@{DIGEST}"
    texts = [("a.yaml", _pod(local)), ("b.yaml", _pod(local, local))]
    sweeps = pipeline._require_local(_spec(tmp_path), texts, _sweep(""), "rewritten manifests")
    assert [[str(i.ref) for i in s.images] for s in sweeps] == [[local], [local]]
    assert [len(s.images[0].findings) for s in sweeps] == [1, 2]


def test_closed_loop_names_the_first_reference_left_upstream(tmp_path: Path) -> None:
    local = f"{HOST}/docker.io/library/nginx:1.27@{DIGEST}"
    texts = [("a.yaml", _pod(local)), ("b.yaml", _pod(local, "quay.io/x/y:1", "quay.io/x/y:1"))]
    with pytest.raises(UnrelocatedImageError) as err:
        pipeline._require_local(_spec(tmp_path), texts, _sweep(""), "rewritten manifests")
    assert err.value.message == f"b.yaml:9: rewritten manifests still pull quay.io/x/y:1 from outside {HOST}"
    assert err.value.hint == "this is a rewrite gap; report it, or exclude the image with a reason"


def test_closed_loop_lets_an_excluded_image_stay_upstream(tmp_path: Path) -> None:
    excluded = _sweep(_pod("quay.io/x/y:1"), options=[ImageOptions(ImageRef.parse("quay.io/x/y"), exclude="why")])
    assert [s.image.written for s in excluded.skipped] == ["quay.io/x/y:1"]
    (again,) = pipeline._require_local(_spec(tmp_path), [("a.yaml", _pod("quay.io/x/y:1"))], excluded, "output")
    assert [i.written for i in again.images] == ["quay.io/x/y:1"]


# --- _require_pinned -------------------------------------------------------------------------------

SPLIT = f"""apiVersion: example.org/v1
kind: Thing
metadata: {{name: t}}
spec:
  image:
    repository: {HOST}/docker.io/library/nginx
    tag: "1.27"
"""


def _local_refs() -> LocalRefs:
    return LocalRefs({"docker.io/library/nginx:1.27": f"{HOST}/docker.io/library/nginx:1.27@{DIGEST}"})


def test_pinned_output_passes_and_upstream_refs_are_not_its_business(tmp_path: Path) -> None:
    again = _sweep(_pod(f"{HOST}/docker.io/library/nginx:1.27@{DIGEST}", "quay.io/x/y:1"))
    assert pipeline._require_pinned(_spec(tmp_path), "out", again, _local_refs()) == 0


def test_local_reference_by_tag_only_is_refused(tmp_path: Path) -> None:
    again = _sweep(_pod(f"{HOST}/docker.io/library/nginx:1.27@{DIGEST}", f"{HOST}/docker.io/library/nginx:1.27"))
    with pytest.raises(UnrelocatedImageError) as err:
        pipeline._require_pinned(_spec(tmp_path), "out", again, _local_refs())
    assert err.value.message == f"out:9: {HOST}/docker.io/library/nginx:1.27 is not pinned by digest"
    assert err.value.hint == "this is a rewrite gap; report it"


def test_split_fields_of_a_carried_image_may_pin_by_tag(tmp_path: Path) -> None:
    again = _sweep(SPLIT)
    assert [f.form for f in again.images[0].findings] == ["split"]
    assert pipeline._require_pinned(_spec(tmp_path), "out", again, _local_refs()) == 1
    # not carried (another tag): refused, split or not
    other = LocalRefs({"docker.io/library/nginx:1.26": f"{HOST}/docker.io/library/nginx:1.26@{DIGEST}"})
    with pytest.raises(UnrelocatedImageError, match=r"^out:6: \S+ is not pinned by digest \(this is a rewrite gap"):
        pipeline._require_pinned(_spec(tmp_path), "out", again, other)
    # carried, but also written whole by tag somewhere: refused
    both = _sweep(SPLIT + "---\n" + _pod(f"{HOST}/docker.io/library/nginx:1.27"))
    with pytest.raises(UnrelocatedImageError, match=r"^out:6: \S+ is not pinned by digest \(this is a rewrite gap"):
        pipeline._require_pinned(_spec(tmp_path), "out", both, _local_refs())


# --- the Crossplane gate ---------------------------------------------------------------------------

class Steps:
    """A real Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, int, int | None, str]] = []

    def step(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        self.steps.append((stage, done, total, detail))

    def transferred(self, nbytes: int) -> None:
        pass


def _crossplane_spec(tmp_path: Path, target: str | None, fixtures: tuple[str, ...] = V2_AWS) -> Spec:
    packages = tuple(CrossplanePackageSource(REFS[name], PACKAGES / name) for name in fixtures)
    return _spec(tmp_path, crossplane=CrossplaneConfig(target=target, packages=packages))


def _gate(spec: Spec, manifests: str, *, target: str | None = None,
          packages: list[sweep.Image] | None = None) -> Steps:
    progress = Steps()
    options = pipeline.BuildOptions(output=spec.path.parent / "out.tar", signer=None, unsigned=True,
                                    crossplane_target=target)
    pipeline._crossplane_gate(spec, options, load_stream(manifests, Origin("xp.yaml", 1)), packages or [], {},
                              spec.path.parent, progress)
    return progress


GOOD = (FIXTURES / "manifests" / "v2-good.yaml").read_text()
LEGACY = (FIXTURES / "manifests" / "v1-legacy.yaml").read_text()


def test_crossplane_gate_needs_a_target(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="^the sources hold Crossplane objects but no target version is set \\(set crossplane"):
        _gate(_crossplane_spec(tmp_path, None), GOOD)


def test_crossplane_gate_passes_a_good_bundle_with_the_target_from_either_place(tmp_path: Path) -> None:
    for spec_target, option in (("2.0", None), (None, "2.0"), ("1.20", "2.0")):
        progress = _gate(_crossplane_spec(tmp_path, spec_target), GOOD, target=option)
        ((stage, done, total, detail),) = progress.steps
        assert (stage, done, total) == ("crossplane", 1, 1) and detail.startswith("pass: ")
    # the option wins over the spec: the good v2 bundle fails on 1.20
    with pytest.raises(CrossplaneError, match=r"^Crossplane gate failed for target 1\.20\.0: "):
        _gate(_crossplane_spec(tmp_path, "2.0"), GOOD, target="1.20")


def test_crossplane_gate_fails_a_legacy_bundle_on_2(tmp_path: Path) -> None:
    with pytest.raises(CrossplaneError, match=r"^Crossplane gate failed for target 2\.0\.0: \d+ error\(s\); first: "
                                              r"xp\.yaml:\d+: XP2-"):
        _gate(_crossplane_spec(tmp_path, "2.0", V1_AWS), LEGACY)


def test_crossplane_gate_reads_only_packages_that_were_pulled(tmp_path: Path) -> None:
    # A package the sweep found but the pull did not bring (not in by_source) is not read from the layout.
    provider = _sweep("apiVersion: pkg.crossplane.io/v1\nkind: Provider\nmetadata: {name: p}\nspec:\n"
                      "  package: xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0\n")
    _gate(_crossplane_spec(tmp_path, "2.0"), GOOD, packages=list(provider.found))


# --- the gate's place in the build -------------------------------------------------------------------

CHART = {"Chart.yaml": "apiVersion: v2\nname: tiny\nversion: 0.1.0\n", "values.yaml": "greeting: hi\n",
         "templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                              "data: {greeting: {{ .Values.greeting | quote }}}\n"}
XRD = ("apiVersion: apiextensions.crossplane.io/v2\nkind: CompositeResourceDefinition\n"
       "metadata: {name: xbuckets.example.org}\nspec:\n  group: example.org\n"
       "  names: {kind: XBucket, plural: xbuckets}\n  scope: Namespaced\n"
       "  versions: [{name: v1alpha1, served: true, referenceable: true}]\n")


def _offline_build(tmp_path: Path, helm: str, manifest: str, crossplane: str = "") -> pipeline.BuildResult:
    """A real build with no image at all (a chart of one ConfigMap, one manifest): nothing to pull."""
    for name, text in {**{f"chart/{k}": v for k, v in CHART.items()}, "m.yaml": manifest}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "bundle.yaml").write_text(
        "apiVersion: airgap-bundle.dev/v1alpha1\nkind: Bundle\nmetadata: {name: t, version: 1.0.0}\n"
        f"localRegistry: {{host: {HOST}}}\n{crossplane}"
        "sources:\n  charts: [{path: chart, release: t}]\n  manifests: [{path: m.yaml}]\n")
    options = pipeline.BuildOptions(output=tmp_path / "out.tar", signer=None, unsigned=True, tools=Tools(helm=helm))
    return pipeline.build(load_spec(tmp_path / "bundle.yaml"), options, Steps())


def test_build_without_crossplane_objects_skips_the_gate(tmp_path: Path, helm: str) -> None:
    result = _offline_build(tmp_path, helm, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\n")
    assert result.output.is_file()


def test_build_with_crossplane_objects_runs_the_gate(tmp_path: Path, helm: str) -> None:
    with pytest.raises(UsageError, match="no target version is set"):
        _offline_build(tmp_path, helm, XRD)
    assert not (tmp_path / "out.tar").exists()
    assert _offline_build(tmp_path, helm, XRD, crossplane="crossplane: {target: \"2.0\"}\n").output.is_file()


def test_every_image_of_an_output_is_checked_not_only_the_first(tmp_path: Path) -> None:
    # An upstream reference (not this check's business) or a split pinned by tag sorts first; a later
    # local reference by tag alone is still refused.
    later = f"{HOST}/quay.io/z/late:1"
    for first in (_pod("docker.io/library/busybox:1"), SPLIT):
        again = _sweep(first + "---\n" + _pod(later))
        assert str(again.images[-1].ref) == later
        with pytest.raises(UnrelocatedImageError, match=f"{later} is not pinned by digest"):
            pipeline._require_pinned(_spec(tmp_path), "out", again, _local_refs())


def test_a_candidate_found_twice_is_named_where_it_is_first_found() -> None:
    found = _sweep(CANDIDATES.replace('  other: "ghcr.io/org/helper:2.0"\n', "")
                   + '  again: "quay.io/team/tool:1.2"\n')
    (candidate,) = found.candidates
    assert [f.line for f in candidate.findings] == [5, 6]
    with pytest.raises(UnvendoredImageError) as err:
        pipeline._require_clean_sweep(found, "bundle.yaml")
    assert err.value.message.startswith("m.yaml:5: quay.io/team/tool:1.2 looks like an image")


def test_a_spec_that_bundles_nothing_is_one_line_not_a_traceback(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    spec = tmp_path / "bundle.yaml"
    spec.write_text("apiVersion: airgap-bundle.dev/v1alpha1\nkind: Bundle\nmetadata: {name: empty, version: 1.0.0}\n"
                    "localRegistry: {host: registry.local:5000}\n")
    result = run_cli("build", str(spec), "--output", str(tmp_path / "e.bundle.tar"), "--unsigned")
    assert result.returncode == 2, result.stderr
    assert "nothing to bundle: the sources pull no image and carry no chart" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "e.bundle.tar").exists()
