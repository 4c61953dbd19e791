"""The build's gates as functions: each one raises its exit-13 error on an output that breaks it.

The e2e tests (tests/e2e/test_build_gates.py) show the gates stopping real builds; these reach the
branches a real build reaches only through a rewrite bug: a Kustomize overlay that still names an
upstream image, and a local reference pinned by tag alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import pipeline, spec, sweep
from bundler.documents import Origin, load_stream
from bundler.errors import UnrelocatedImageError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs, local_reference

LOCAL = "registry.airgap.local:5000"
D = "sha256:" + "3" * 64
POD = "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n    - name: c\n      image: {image}\n"


@pytest.fixture
def the_spec(tmp_path: Path) -> spec.Spec:
    (tmp_path / "bundle.yaml").write_text(f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: g, version: "1"}}
localRegistry: {{host: {LOCAL}}}
""")
    return spec.load(tmp_path / "bundle.yaml")


NGINX = ImageRef.parse("nginx:1.27.3")
LOCAL_REFS = LocalRefs({NGINX.canonical: local_reference(NGINX, D, host=LOCAL)})


def test_require_local_fails_on_an_upstream_image_and_names_the_output(the_spec: spec.Spec) -> None:
    nothing = sweep.sweep([])
    ok = POD.format(image=LOCAL_REFS.by_source[NGINX.canonical])
    [again] = pipeline._require_local(the_spec, [("kustomize/prod/overlay", ok)], nothing, "the kustomize overlay")
    assert [str(i.ref) for i in again.images] == [LOCAL_REFS.by_source[NGINX.canonical]]
    with pytest.raises(UnrelocatedImageError) as info:
        pipeline._require_local(the_spec, [("a", ok), ("kustomize/prod/overlay", POD.format(image="nginx:1.27.3"))],
                                nothing, "the kustomize overlay")
    assert info.value.exit_code == 13
    assert str(info.value) == (f"kustomize/prod/overlay:7: the kustomize overlay still pull nginx:1.27.3 from outside "
                               f"{LOCAL} (this is a rewrite gap; report it, or exclude the image with a reason)")


def test_require_local_lets_an_excluded_image_stay_upstream(the_spec: spec.Spec, tmp_path: Path) -> None:
    (tmp_path / "bundle.yaml").write_text((tmp_path / "bundle.yaml").read_text()
                                          + "images:\n  - {ref: 'nginx:1.27.3', exclude: pulled by the cluster's own mirror}\n")
    excluding = spec.load(tmp_path / "bundle.yaml")
    text = POD.format(image="nginx:1.27.3")
    found = sweep.sweep(load_stream(text, Origin("src", 1)), options=excluding.images)
    assert found.skipped
    pipeline._require_local(excluding, [("out", text)], found, "rewritten manifests")  # no error


def test_require_pinned_refuses_a_local_reference_by_tag_alone(the_spec: spec.Spec) -> None:
    pinned = POD.format(image=LOCAL_REFS.by_source[NGINX.canonical])
    assert pipeline._require_pinned(the_spec, "o", sweep.sweep(load_stream(pinned, Origin("o", 1))), LOCAL_REFS) == 0
    by_tag = POD.format(image=f"{LOCAL}/docker.io/library/nginx:1.27.3")
    with pytest.raises(UnrelocatedImageError) as info:
        pipeline._require_pinned(the_spec, "kustomize/prod/overlay", sweep.sweep(load_stream(by_tag, Origin("o", 1))),
                                 LOCAL_REFS)
    assert info.value.exit_code == 13
    assert str(info.value).startswith(f"kustomize/prod/overlay:7: {LOCAL}/docker.io/library/nginx:1.27.3 is not "
                                      "pinned by digest")
