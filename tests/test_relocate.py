"""Rewrite: round-trip YAML, args/env substrings, split objects, the overlay (real kubectl) and the
values override (real helm), each swept again."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bundler import sweep
from bundler.documents import Origin, load_stream
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
