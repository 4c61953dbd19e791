"""Rewrite: round-trip YAML, args/env substrings, split objects, the overlay (real kubectl) and the
values override (real helm), each swept again."""

from __future__ import annotations

import dataclasses
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bundler import sweep
from bundler.documents import Origin, load_stream
from bundler.errors import InputError, SpecError
from bundler.reference import ImageRef
from bundler.relocate import (
    LocalRefs,
    Stream,
    kustomize_overlay,
    local_reference,
    rewrite_streams,
)

D = "sha256:" + "1" * 64
HOST = "reg.local:5000"
SOURCES = ["nginx:1.27", "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0", "quay.io/a/b:1"]
LOCAL = LocalRefs({ImageRef.parse(s).canonical: local_reference(ImageRef.parse(s), D, host=HOST) for s in SOURCES})

MANIFEST = """\
# a comment that must survive
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
        - name: web   # trailing comment
          image: "nginx:1.27"
          args:
            - --prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0
            - --log-level=info
"""


def test_local_reference_keeps_the_source_host_and_pins_the_digest() -> None:
    assert LOCAL.by_source["docker.io/library/nginx:1.27"] == f"{HOST}/docker.io/library/nginx:1.27@{D}"
    assert local_reference(ImageRef.parse("nginx"), D, host=HOST, template="{host}/mirror/{name}") == \
        f"{HOST}/mirror/nginx:latest@{D}"


def test_round_trip_changes_only_image_strings() -> None:
    out = rewrite_streams([Stream("m.yaml", MANIFEST, "m.yaml")], sweep.find_images, LOCAL)
    text = out.streams[0].text
    assert "# a comment that must survive" in text and "# trailing comment" in text
    assert f'image: "{HOST}/docker.io/library/nginx:1.27@{D}"' in text  # quoting kept
    assert f"--prometheus-config-reloader={HOST}/quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0@{D}" in text
    assert "--log-level=info" in text
    assert len(out.changes) == 2 and not out.unmapped
    again = sweep.sweep(load_stream(text, Origin("m.yaml", 1)))
    assert {i.ref.domain for i in again.images} == {HOST}


def test_unmapped_references_are_reported_not_guessed() -> None:
    out = rewrite_streams([Stream("m.yaml", MANIFEST.replace("nginx:1.27", "redis:7.2"), "m.yaml")],
                          sweep.find_images, LOCAL)
    assert out.unmapped == (("m.yaml", "spec.template.spec.containers[0].image", "redis:7.2"),)


def test_kustomize_overlay_builds_and_points_at_the_local_registry(tmp_path: Path, kubectl: str) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "deploy.yaml").write_text(MANIFEST)
    (base / "kustomization.yaml").write_text("resources: [deploy.yaml]\n")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(kustomize_overlay(["nginx:1.27"], LOCAL, base="../base"))
    built = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
    assert f"image: {HOST}/docker.io/library/nginx@{D}" in built


# --- manifests.py: the rewrite's edge cases, each pinned to its exact output ---------------------------------

def _rewrite(text: str, local: LocalRefs = LOCAL, find: Any = sweep.find_images) -> Any:
    return rewrite_streams([Stream("m.yaml", text, "src/m.yaml")], find, local)


@pytest.mark.parametrize(("template", "error"), [
    ("{host}/{nope}", "localRegistry.template '{host}/{nope}': 'nope'"),
    ("{host}/{0}", "localRegistry.template '{host}/{0}': "),
    ("{host}/{", "localRegistry.template '{host}/{': "),
    ("mirror.example/{path}", "localRegistry.template 'mirror.example/{path}' gives "
                              f"'mirror.example/library/nginx:1.27@{D}', not a reference on {HOST}"),
    ("{host}/Upper/{path}", "localRegistry.template '{host}/Upper/{path}' gives "),
])
def test_local_reference_refuses_a_bad_template(template: str, error: str) -> None:
    with pytest.raises(SpecError) as err:
        local_reference(ImageRef.parse("nginx:1.27"), D, host=HOST, template=template)
    assert err.value.message.startswith(error)


def test_local_reference_of_a_digest_only_source_has_no_tag() -> None:
    digest_only = ImageRef.parse(f"quay.io/a/b@{D}")
    assert local_reference(digest_only, D, host=HOST) == f"{HOST}/quay.io/a/b@{D}"


def test_local_reference_name_placeholder_is_the_last_path_component() -> None:
    for source, name in (("reg.example/tool:1", "tool"), ("quay.io/org/team/tool:1", "tool")):
        assert local_reference(ImageRef.parse(source), D, host=HOST, template="{host}/flat/{name}") == \
            f"{HOST}/flat/{name}:1@{D}"


def test_the_rewrite_hands_on_immutable_values() -> None:
    out = _rewrite(MANIFEST)
    for value, attribute in ((out, "changes"), (out.streams[0], "text"), (out.changes[0], "after"), (LOCAL, "by_source")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, attribute, None)


UNTOUCHED = """# layout as kubectl and helm write it; nothing here is an image, so the bytes must come back unchanged
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  long: "a long value with spaces that a YAML writer with a small line width would fold onto several lines, which changes nothing for YAML but everything for a reader diffing the rewrite"
  list: |
    one
    two
---
apiVersion: v1
kind: List
items:
  - kind: Thing
    spec:
      steps:
        - name: a
          with:
            - x
            - y
"""


def test_a_stream_without_images_comes_back_byte_for_byte() -> None:
    out = _rewrite(UNTOUCHED)
    assert out.streams[0].text == UNTOUCHED and out.streams[0].source == "src/m.yaml"
    assert not out.changes and not out.unmapped


def test_an_empty_document_is_dropped_and_bad_yaml_is_refused() -> None:
    assert _rewrite("---\n---\n" + UNTOUCHED).streams[0].text == UNTOUCHED
    with pytest.raises(InputError, match="^src/m.yaml: cannot re-read for rewriting: "):
        _rewrite("a: [unclosed\n")


def test_an_unmapped_reference_does_not_stop_the_others() -> None:
    text = MANIFEST.replace('"nginx:1.27"', '"redis:7.2"')
    out = _rewrite(text)
    assert out.unmapped == (("m.yaml", "spec.template.spec.containers[0].image", "redis:7.2"),)
    assert [c.path for c in out.changes] == ["spec.template.spec.containers[0].args[0]"]


@dataclass(frozen=True)
class Hit:
    """A hand-placed finding: the finder seam takes any object with these fields."""

    path: tuple[str | int, ...]
    written: str
    ref: ImageRef
    span: tuple[int, int] | None = None


def _at(path: tuple[str | int, ...], written: str, span: tuple[int, int] | None = None) -> Any:
    return lambda doc: [Hit(path, written, ImageRef.parse(written), span)] if doc.get("kind") == "Thing" else []


def test_a_span_replaces_that_occurrence_only_and_no_span_replaces_every_one() -> None:
    text = "kind: Thing\nnote: nginx:1.27 and again nginx:1.27 here\n"
    local = LOCAL.by_source["docker.io/library/nginx:1.27"]
    second = text.split("\n")[1].removeprefix("note: ").rindex("nginx:1.27")
    out = _rewrite(text, find=_at(("note",), "nginx:1.27", (second, second + len("nginx:1.27"))))
    assert out.streams[0].text == f"kind: Thing\nnote: nginx:1.27 and again {local} here\n"
    out = _rewrite(text, find=_at(("note",), "nginx:1.27"))
    assert out.streams[0].text == f"kind: Thing\nnote: {local} and again {local} here\n"
    # a span that no longer points at the reference falls back to replacing it wherever it is
    out = _rewrite(text, find=_at(("note",), "nginx:1.27", (0, 3)))
    assert out.streams[0].text == f"kind: Thing\nnote: {local} and again {local} here\n"
    assert out.changes[0].before == "nginx:1.27 and again nginx:1.27 here"


def test_a_split_object_without_a_composition_is_left_and_reported() -> None:
    text = "kind: Thing\nimage: {repository: nginx, tag: '1.27'}\n"
    out = _rewrite(text, find=_at(("image",), "nginx:1.27"))
    assert out.streams[0].text == text and out.unmapped == (("m.yaml", "image", "nginx:1.27"),)


SPLITS = """apiVersion: example.org/v1
kind: Thing
metadata: {name: t}
spec:
  app:
    image:
      registry: quay.io
      repository: a/b
      tag: "1"
      digest: ""
  sidecar:
    image:
      registry: docker.io
      repository: library/nginx
      tag: '1.27'
---
apiVersion: nvidia.com/v1
kind: ClusterPolicy
metadata: {name: c}
spec:
  driver:
    repository: nvcr.io/nvidia
    image: driver
    version: "550.1"
"""


def test_split_objects_are_rewritten_field_by_field_with_the_digest_where_the_format_has_one() -> None:
    local = LocalRefs({**LOCAL.by_source, "nvcr.io/nvidia/driver:550.1": f"{HOST}/nvcr.io/nvidia/driver:550.1@{D}",
                       # a mirror may re-tag: the target is what counts, field by field
                       "quay.io/a/b:1": f"{HOST}/quay.io/a/b:1-airgap@{D}"})
    out = _rewrite(SPLITS, local)
    assert out.streams[0].text == SPLITS.replace(
        "registry: quay.io\n      repository: a/b\n      tag: \"1\"\n      digest: \"\"",
        f"registry: {HOST}\n      repository: quay.io/a/b\n      tag: \"1-airgap\"\n      digest: \"{D}\"").replace(
        "registry: docker.io\n      repository: library/nginx",
        f"registry: {HOST}\n      repository: docker.io/library/nginx").replace(
        "repository: nvcr.io/nvidia\n    image: driver\n    version: \"550.1\"",
        f"repository: {HOST}/nvcr.io/nvidia\n    image: driver\n    version: \"{D}\"")
    notes = {c.path: c.note for c in out.changes}
    assert notes == {"spec.app.image": "", "spec.driver": "",
                     "spec.sidecar.image": "pinned by tag: shape {registry}/{repository}:{tag} has no digest form; "
                                           f"the bundle records {D}"}
    assert [c.before for c in out.changes] == ["registry=quay.io repository=a/b tag=1",
                                               "registry=docker.io repository=library/nginx tag=1.27",
                                               "repository=nvcr.io/nvidia image=driver version=550.1"]


def test_a_split_object_without_a_digest_form_needs_a_tag() -> None:
    # A local reference pinned by digest alone cannot go into {registry}/{repository}:{tag}; the one with
    # a digest field takes it and keeps its tag; the first failure does not stop the next object.
    local = LocalRefs({"docker.io/library/nginx:1.27": f"{HOST}/docker.io/library/nginx@{D}",
                       "quay.io/a/b:1": f"{HOST}/quay.io/a/b@{D}"})
    app, sidecar = SPLITS.split("---")[0].split("  sidecar:\n")
    out = _rewrite(app.replace("  app:\n", "  sidecar:\n" + sidecar + "  app:\n"), local)
    assert out.unmapped == (("m.yaml", "spec.sidecar.image", "docker.io/library/nginx:1.27"),)
    assert [(c.path, c.after) for c in out.changes] == [
        ("spec.app.image", f"registry={HOST} repository=quay.io/a/b tag=1 digest={D}")]


def test_a_numeric_tag_field_takes_the_new_tag_as_a_string() -> None:
    text = "apiVersion: example.org/v1\nkind: Thing\nmetadata: {name: t}\nspec:\n  image:\n    registry: quay.io\n" \
           "    repository: a/b\n    tag: 1\n    digest: ''\n"
    local = LocalRefs({"quay.io/a/b:1": f"{HOST}/quay.io/a/b:1-airgap@{D}"})
    out = _rewrite(text, local)
    assert out.streams[0].text == text.replace("registry: quay.io", f"registry: {HOST}").replace(
        "repository: a/b", "repository: quay.io/a/b").replace("tag: 1", "tag: 1-airgap").replace("digest: ''",
                                                                                                 f"digest: '{D}'")


def test_env_values_are_rewritten_whole_and_inside_longer_strings() -> None:
    text = MANIFEST.replace("            - --log-level=info\n", """            - --log-level=info
          env:
            - {name: RELATED_IMAGE_B, value: "quay.io/a/b:1"}
            - {name: HELPERS, value: "main=quay.io/a/b:1,debug=off"}
            - {name: LOG_LEVEL, value: info}
""")
    finder = sweep.find_images
    out = rewrite_streams([Stream("m.yaml", text, "m.yaml")], finder, LOCAL)
    local_b = f"{HOST}/quay.io/a/b:1@{D}"
    assert f'{{name: RELATED_IMAGE_B, value: "{local_b}"}}' in out.streams[0].text
    assert f'{{name: HELPERS, value: "main={local_b},debug=off"}}' in out.streams[0].text
    assert "{name: LOG_LEVEL, value: info}" in out.streams[0].text
    assert {c.path for c in out.changes} >= {"spec.template.spec.containers[0].env[0].value",
                                             "spec.template.spec.containers[0].env[1].value"}


def test_a_split_format_that_hard_codes_the_host_is_reported_unmapped() -> None:
    # No field can move `quay.io/{name}:{release}` to the local registry: the rewrite says so rather
    # than writing something else, and the build's closed loop then fails (tests/e2e/test_build_gates.py).
    from bundler import catalogue
    rule = catalogue.entry({"id": "acme", "operator": "ACME", "sources": [{"url": "https://acme.example", "versions": "1"}],
                            "splits": [{"group": "acme.example", "kind": "Engine", "path": "spec.runtime",
                                        "format": "quay.io/{name}:{release}"}]}, file="t", line=1)
    known = catalogue.builtin().extend((rule,))
    text = "apiVersion: acme.example/v1\nkind: Engine\nmetadata: {name: e}\nspec:\n  runtime: {name: a/b, release: '1'}\n"
    out = rewrite_streams([Stream("e.yaml", text, "e.yaml")], lambda d: sweep.find_images(d, catalogue=known), LOCAL)
    assert out.unmapped == (("e.yaml", "spec.runtime", "quay.io/a/b:1"),)
    assert out.streams[0].text == text and not out.changes
