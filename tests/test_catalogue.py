"""The operator catalogue: every entry cites its source, finds its fixture as definite with the entry
named, and the fixture rewritten to the local registry sweeps clean (the closed loop); split shapes,
user rules from a spec, and file:line errors for malformed entries."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from bundler import catalogue, spec, sweep
from bundler.documents import Origin, load_stream
from bundler.errors import SpecError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs, Stream, local_reference, rewrite_streams

HOST = "registry.local:5000"
D = "sha256:" + "7" * 64
FIXTURES = Path(__file__).parent / "fixtures" / "operators"
ENTRIES = {e.id: e for e in catalogue.builtin().entries}


def swept(text: str, name: str = "f.yaml", known: catalogue.Catalogue | None = None) -> sweep.Sweep:
    return sweep.sweep(load_stream(text, Origin(name, 1)), catalogue=known)


def local_for(result: sweep.Sweep) -> LocalRefs:
    """Every image the sweep found, on the local registry, pinned to a made-up digest."""
    return LocalRefs({i.ref.canonical: local_reference(ImageRef.parse(i.written), D, host=HOST)
                      for i in result.images})


def test_at_least_twenty_operators_each_citing_upstream() -> None:
    assert len(ENTRIES) >= 20
    for entry in ENTRIES.values():
        assert entry.sources and all(s.url.startswith("https://") and s.versions for s in entry.sources)
        assert entry.file == f"bundler/catalogue/{entry.id}.yaml"


@pytest.mark.parametrize("entry_id", sorted(ENTRIES))
def test_fixture_is_found_definite_with_the_entry_named(entry_id: str) -> None:
    text = (FIXTURES / f"{entry_id}.yaml").read_text()
    result = swept(text, f"{entry_id}.yaml")
    named = [f for i in result.images for f in i.findings if f.rule == "catalogue" and f.evidence == entry_id]
    assert named, f"no finding names {entry_id}"
    assert all(f.confidence == "definite" for f in named)
    assert not result.candidates and not result.invalid  # the operator's images are all recognised
    # Without the catalogue, the same fixture has no finding naming the entry.
    bare = swept(text, known=catalogue.Catalogue())
    assert not [f for i in bare.images for f in i.findings if f.rule == "catalogue"]


@pytest.mark.parametrize("entry_id", sorted(ENTRIES))
def test_fixture_rewritten_sweeps_clean(entry_id: str) -> None:
    """The closed-loop invariant: after the rewrite, nothing the sweep recognises is outside HOST."""
    text = (FIXTURES / f"{entry_id}.yaml").read_text()
    before = swept(text)
    out = rewrite_streams([Stream("m.yaml", text, "m.yaml")], sweep.find_images, local_for(before))
    assert not out.unmapped
    again = swept(out.streams[0].text)
    assert again.images and {i.ref.domain for i in again.images} == {HOST}
    assert not again.invalid
    # Same images, now local: each rewritten reference names the source path under the local host.
    assert {i.ref.path for i in again.images} <= {
        f"{i.ref.domain}/{i.ref.path}" for i in before.images}


def test_nvidia_split_fields_are_pinned_by_digest_in_version() -> None:
    text = (FIXTURES / "nvidia-gpu-operator.yaml").read_text()
    before = swept(text)
    toolkit = next(i for i in before.images if i.ref.path == "nvidia/k8s/container-toolkit")
    finding = toolkit.findings[0]
    assert (finding.field_path, finding.form, finding.evidence) == ("spec.toolkit", "split", "nvidia-gpu-operator")
    assert finding.written == "nvcr.io/nvidia/k8s/container-toolkit:v1.17.3-ubuntu20.04"
    out = rewrite_streams([Stream("m.yaml", text, "m.yaml")], sweep.find_images, local_for(before))
    doc = next(d for d in load_stream(out.streams[0].text, Origin("m", 1)) if d.kind == "ClusterPolicy")
    assert doc.obj["spec"]["toolkit"] == {
        "enabled": True, "repository": f"{HOST}/nvcr.io/nvidia/k8s", "image": "container-toolkit", "version": D}
    change = next(c for c in out.changes if c.path == "spec.toolkit")
    assert change.note == ""  # pinned by digest, nothing to say
    # The operator's own join (repository/image@version) of the rewritten fields is the local reference.
    again = swept(out.streams[0].text)
    assert f"{HOST}/nvcr.io/nvidia/k8s/container-toolkit@{D}" in {i.written for i in again.images}


def test_istio_hub_and_tag_are_pinned_by_tag_and_say_so() -> None:
    text = (FIXTURES / "istio.yaml").read_text()
    before = swept(text)
    assert sorted(str(i.ref) for i in before.found) == ["docker.io/istio/pilot:1.24.2", "docker.io/istio/proxyv2:1.24.2"]
    out = rewrite_streams([Stream("m.yaml", text, "m.yaml")], sweep.find_images, local_for(before))
    assert f"hub: {HOST}/docker.io/istio\n" in out.streams[0].text and "tag: 1.24.2\n" in out.streams[0].text
    assert "@" not in out.streams[0].text  # never tag@digest in a field that serves several images
    assert all(c.note.startswith("pinned by tag: istio has no digest form") for c in out.changes)


def test_common_split_shapes_are_definite_and_rewritten() -> None:
    text = """\
apiVersion: example.com/v1
kind: Thing
metadata: {name: t}
spec:
  agent: {repository: nvcr.io/acme, image: agent, version: v2.0}
  db:
    image: {registry: docker.io, repository: bitnami/postgresql, tag: "16.4.0", digest: ""}
  cache: {image: redis, tag: "7.4"}
  helper:
    image: {repository: ghcr.io/acme/helper, tag: "1.1"}
"""
    result = swept(text)
    got = {f.field_path: (f.written, f.rule, f.evidence) for i in result.images for f in i.findings}
    assert got == {
        "spec.agent": ("nvcr.io/acme/agent:v2.0", "split-shape", "shape {repository}/{image}:{version}"),
        "spec.db.image": ("docker.io/bitnami/postgresql:16.4.0", "split-shape", "shape {registry}/{repository}:{tag}"),
        "spec.cache": ("redis:7.4", "split-shape", "shape {image}:{tag}"),
        "spec.helper.image": ("ghcr.io/acme/helper:1.1", "split-shape", "shape {repository}:{tag}"),
    }
    assert not result.candidates
    out = rewrite_streams([Stream("m.yaml", text, "m.yaml")], sweep.find_images, local_for(result))
    new = out.streams[0].text
    # registry keeps a host; a digest field takes the digest; no digest form means the tag, said so
    assert f"registry: {HOST}, repository: docker.io/bitnami/postgresql, tag: \"16.4.0\", digest: \"{D}\"" in new
    assert f"repository: {HOST}/nvcr.io/acme, image: agent, version: v2.0" in new
    assert f"{{image: {HOST}/docker.io/library/redis, tag: \"7.4\"}}" in new
    notes = {c.path: c.note for c in out.changes}
    assert notes["spec.db.image"] == "" and notes["spec.agent"].startswith("pinned by tag")
    assert {i.ref.domain for i in swept(new).images} == {HOST}


def test_unknown_split_shapes_are_candidates_with_evidence_and_not_rewritten() -> None:
    text = """\
apiVersion: example.com/v1
kind: Thing
metadata: {name: t}
spec:
  image: {name: quay.io/acme/app, ver: "3.2"}
  source: {repository: org/config, tag: v1}
"""
    result = swept(text)
    assert [(str(i.ref), i.confidence) for i in result.images] == [("quay.io/acme/app:3.2", "candidate")]
    finding = result.candidates[0].findings[0]
    assert (finding.rule, finding.evidence, finding.field_path) == ("split-unknown", "unknown shape {name, ver}",
                                                                    "spec.image")
    # Confirmed and pulled, it still cannot be rewritten consistently: reported, never guessed.
    out = rewrite_streams([Stream("m.yaml", text, "m.yaml")], sweep.find_images, local_for(result))
    assert out.unmapped == (("m.yaml", "spec.image", "quay.io/acme/app:3.2"),)
    assert "quay.io/acme/app" in out.streams[0].text


RULE = """\
  rules:
    - id: acme-operator
      operator: ACME operator
      sources: [{url: "https://acme.example/docs/crd", versions: "2.x"}]
      splits:
        - {group: acme.example, kind: Engine, path: spec.runtime, format: "{prefix}/{name}:{release}",
           digestFormat: "{prefix}/{name}@{release}"}
      flags: [{name: worker-image}]
"""
ENGINE = """\
apiVersion: acme.example/v1
kind: Engine
metadata: {name: e}
spec:
  runtime: {prefix: quay.io/acme, name: runtime, release: "5.0"}
"""


def write_spec(tmp_path: Path, discovery: str) -> Path:
    (tmp_path / "engine.yaml").write_text(ENGINE)
    path = tmp_path / "bundle.yaml"
    path.write_text(f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: t, version: 1.0.0}}
localRegistry: {{host: {HOST}}}
sources:
  manifests: [{{path: engine.yaml}}]
discovery:
{discovery}""")
    return path


def test_spec_discovery_rules_extend_the_catalogue(tmp_path: Path) -> None:
    loaded = spec.load(write_spec(tmp_path, RULE))
    assert [e.id for e in loaded.discovery_rules] == ["acme-operator"]
    assert not swept(ENGINE).images  # `runtime: {prefix, name, release}`: nothing says image without the rule
    result = swept(ENGINE, known=loaded.catalogue)
    (image,) = result.found
    assert (str(image.ref), image.findings[0].evidence) == ("quay.io/acme/runtime:5.0", "acme-operator")
    find = functools.partial(sweep.find_images, catalogue=loaded.catalogue)
    out = rewrite_streams([Stream("m.yaml", ENGINE, "m.yaml")], find, local_for(result))
    assert f"runtime: {{prefix: {HOST}/quay.io/acme, name: runtime, release: \"{D}\"}}" in out.streams[0].text


@pytest.mark.parametrize(
    ("rule", "line", "message"),
    [
        (RULE.replace('"{prefix}/{name}:{release}"', '"{prefix}/{name}"'), 13, "splits[0].format: "),
        (RULE.replace('      sources: [{url: "https://acme.example/docs/crd", versions: "2.x"}]\n', ""), 9,
         "'sources' is a required property"),
        (RULE.replace("worker-image", "bad name!"), 15, "flags[0].name: 'bad name!'"),
    ],
)
def test_malformed_rule_in_a_spec_names_file_and_line(tmp_path: Path, rule: str, line: int, message: str) -> None:
    path = write_spec(tmp_path, rule)
    with pytest.raises(SpecError) as err:
        spec.load(path)
    assert err.value.message.startswith(f"{path}:{line}: ") and message in err.value.message


def test_malformed_catalogue_file_names_file_and_line() -> None:
    text = "id: x\noperator: X\nsources:\n  - {url: https://x.example, versions: '1'}\nsplits:\n" \
           "  - {group: x.io, kind: X, path: spec, format: '{a}/{b}:{c}', digestFormat: '{a}@{c}'}\n"
    with pytest.raises(SpecError) as err:
        catalogue.load_text(text, "bundler/catalogue/x.yaml")
    assert err.value.message == ("bundler/catalogue/x.yaml:6: splits[0].digestFormat: "
                                 "the digest form must join the same name fields as format")
    with pytest.raises(SpecError, match=r"^bundler/catalogue/y.yaml:3: sources\[0\].url: 'http://x' does not match"):
        catalogue.load_text("id: y\noperator: Y\nsources: [{url: 'http://x', versions: '1'}]\nenv: [{name: A}]\n",
                            "bundler/catalogue/y.yaml")


def test_the_fast_loader_reads_every_built_in_file_as_the_round_trip_loader_does() -> None:
    """builtin() parses with PyYAML's C loader (YAML 1.1) for speed; the entries must equal ruamel's
    (YAML 1.2) reading of the same files, or a `yes`, `on` or `0755` could mean something else."""
    folder = Path(catalogue.__file__).parent
    files = sorted(folder.glob("*.yaml"))
    assert len(files) == len(catalogue.builtin().entries) >= 20
    for path in files:
        text, name = path.read_text(), f"bundler/catalogue/{path.name}"
        assert catalogue.load_fast(text, name) == catalogue.load_text(text, name), path.name
    assert catalogue.builtin().entries == tuple(catalogue.load_text(p.read_text(), f"bundler/catalogue/{p.name}")
                                                for p in files)


@pytest.mark.parametrize("text", [
    "id: x\noperator: X\nsources:\n  - {url: https://x.example, versions: '1'}\nsplits:\n"
    "  - {group: x.io, kind: X, path: spec, format: '{a}/{b}:{c}', digestFormat: '{a}@{c}'}\n",
    "id: x\noperator: X\nsources: [\n",  # malformed YAML
    "- just\n- a list\n",
])
def test_the_fast_loader_fails_as_the_round_trip_loader_does_with_the_line(text: str) -> None:
    with pytest.raises(SpecError) as slow:
        catalogue.load_text(text, "bundler/catalogue/x.yaml")
    with pytest.raises(SpecError) as fast:
        catalogue.load_fast(text, "bundler/catalogue/x.yaml")
    assert fast.value.message == slow.value.message and fast.value.message.startswith("bundler/catalogue/x.yaml:")


def test_format_compose_and_decompose_are_inverse() -> None:
    fmt = catalogue.Format.parse("{registry}/{repository}/{image}:{tag}")
    values = {"registry": "ghcr.io", "repository": "org/team", "image": "app", "tag": "1"}
    assert fmt.compose(values) == "ghcr.io/org/team/app:1"
    assert fmt.decompose("reg.local/ghcr.io/org/team/app", values) == {
        "registry": "reg.local", "repository": "ghcr.io/org/team"}
    assert fmt.decompose("reg.local/flat/app", values) is None  # the template dropped the source path
    assert catalogue.Format.parse("docker.io/{repository}:{tag}").decompose("x/y", {"repository": "y"}) is None


def test_closed_loop_uses_the_spec_rules(tmp_path: Path) -> None:
    """A build must not pass while a manifest names an image outside the local registry that only the
    spec's own rule recognises: the pipeline's re-sweep reads the same catalogue."""
    from bundler import pipeline
    from bundler.errors import UnrelocatedImageError

    loaded = spec.load(write_spec(tmp_path, RULE))
    found = swept(ENGINE, known=loaded.catalogue)
    with pytest.raises(UnrelocatedImageError, match=r"m.yaml:\d+: rewritten manifests still pull quay.io/acme/runtime:5.0"):
        pipeline._require_local(loaded, [("m.yaml", ENGINE)], found, "rewritten manifests")
