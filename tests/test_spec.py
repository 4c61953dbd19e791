"""bundle.yaml: the example loads; every kind of mistake names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import spec
from bundler.errors import SpecError
from bundler.oci import Platform
from bundler.reference import ImageRef

MINIMAL = """\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata:
  name: app
  version: "1.0"
localRegistry:
  host: registry.local:5000
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bundle.yaml"
    path.write_text(text)
    return path


def test_example_spec_loads(repo_root: Path) -> None:
    s = spec.load(repo_root / "examples" / "bundle.yaml")
    assert (s.name, s.version, s.local_registry) == ("demo", "1.0.0", "registry.airgap.local:5000")
    assert s.platforms == (Platform("linux", "amd64"), Platform("linux", "arm64"))
    assert s.charts[0].path == repo_root / "examples" / "charts" / "demo"
    assert s.charts[0].values == (repo_root / "examples" / "values-airgap.yaml",)
    assert s.charts[0].set == ("replicaCount=2",)
    assert s.registries[0].mirrors == ("127.0.0.1:5000",) and s.registries[0].skip_upstream
    assert [a.name for a in s.authorities if a.required] == ["vendor"]
    busybox = s.options_for(ImageRef.parse("busybox:1.36"))
    assert busybox is not None and busybox.platform_exemptions[0].platform == Platform("linux", "arm64")
    assert s.digest.startswith("sha256:") and len(s.digest) == 71


def test_defaults(tmp_path: Path) -> None:
    s = spec.load(write(tmp_path, MINIMAL))
    assert s.template == "{host}/{source_host}/{path}"
    assert [str(p) for p in s.platforms] == ["linux/amd64", "linux/arm64"]
    assert s.authorities == (spec.Authority("vendor", True),)
    assert s.charts == () and s.registries == ()


def test_options_for_prefers_the_most_specific_entry(tmp_path: Path) -> None:
    s = spec.load(write(tmp_path, MINIMAL + """\
images:
  - ref: quay.io/a/b
    keepUpstreamIndex: true
  - ref: quay.io/a/b:2
    confirm: true
"""))
    assert s.options_for(ImageRef.parse("quay.io/a/b:2")).confirm  # type: ignore[union-attr]
    assert s.options_for(ImageRef.parse("quay.io/a/b:1")).keep_upstream_index  # type: ignore[union-attr]
    assert s.options_for(ImageRef.parse("quay.io/a/c:1")) is None


@pytest.mark.parametrize(("extra", "line", "needle"), [
    ("platforms: [linux]\n", 8, "platforms[0]"),
    ("images:\n  - ref: Quay.io/A/B\n", 9, "must be lowercase"),
    ("extraImages:\n  - ref: nginx\n", 9, "'reason' is a required property"),
    ("registries:\n  - host: docker.io\n    credentials: {password: hunter2}\n", 10, "credentials"),
    ("sources:\n  charts:\n    - values: [a.yaml]\n", 10, "'path' is a required property"),
    ("bogus: 1\n", 8, "unknown key `bogus`; expected one of apiVersion, crossplane, "),
])
def test_errors_name_file_line_and_field(tmp_path: Path, extra: str, line: int, needle: str) -> None:
    path = write(tmp_path, MINIMAL + extra)
    with pytest.raises(SpecError) as err:
        spec.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:"), message
    assert needle in message


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("platforms:", "platfroms:", "unknown key `platfroms`; did you mean `platforms`?"),
    ("    mirrors:", "    mirorrs:", "registries[0]: unknown key `mirorrs`; did you mean `mirrors`?"),
    ("      release: demo", "      relase: demo", "sources.charts[0]: unknown key `relase`; did you mean `release`?"),
])
def test_misspelled_key_in_the_example_spec_is_named_at_its_line(repo_root: Path, tmp_path: Path, old: str,
                                                                 new: str, expected: str) -> None:
    """The real example spec with one key misspelled: that key's own line (not the line of the mapping
    that holds it, which was line 1 for a top-level key) and the key it was meant to be."""
    text = (repo_root / "examples" / "bundle.yaml").read_text()
    lines = text.splitlines()
    line = next(n for n, ln in enumerate(lines, 1) if ln.startswith(old + " ") or ln == old)
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path = tmp_path / "bundle.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError) as err:
        spec.load(path)
    assert str(err.value) == (f"{path}:{line}: {expected} "
                              "(see schemas/bundle.schema.json and examples/bundle.yaml)")


def test_wildcard_registry_entry_with_a_mirror_of_its_own(tmp_path: Path) -> None:
    s = spec.load(write(tmp_path, MINIMAL + """registries:
  - host: quay.io
  - host: "*"
    mirror:
      host: mirror.corp.example:5000
      prefix: "cache/{host}"
      caFile: certs/corp-ca.pem
      credentials: {usernameEnv: MIRROR_USER, passwordEnv: MIRROR_PASSWORD}
"""))
    wildcard = s.registry("docker.io")
    assert wildcard is not None and wildcard.host == "*" and wildcard.mirror == spec.MirrorConfig(
        "mirror.corp.example:5000", "cache/{host}", insecure=False, ca_file=tmp_path / "certs" / "corp-ca.pem",
        username_env="MIRROR_USER", password_env="MIRROR_PASSWORD")
    assert wildcard.mirror.prefix_for("docker.io") == "cache/docker.io"
    assert s.registry("quay.io") == spec.RegistryConfig("quay.io")  # its own entry wins
    assert spec.registry_for((), "quay.io") is None


@pytest.mark.parametrize(("entry", "needle"), [
    ('  - host: "*"\n    mirrors: [m.example]\n', "registries[0]: 'mirror' is a required property"),
    ('  - host: "*"\n    mirror: {host: m.example, prefix: "{hostname}"}\n', "registries[0].mirror.prefix"),
    ('  - host: "*"\n    mirror: {host: m.example, insecure: yes-please}\n', "registries[0].mirror.insecure"),
])
def test_wildcard_entry_mistakes_name_their_line(tmp_path: Path, entry: str, needle: str) -> None:
    path = write(tmp_path, MINIMAL + "registries:\n" + entry)
    with pytest.raises(SpecError) as err:
        spec.load(path)
    assert str(err.value).startswith(f"{path}:") and needle in str(err.value), str(err.value)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "platforms: [linux/amd64\n")
    with pytest.raises(SpecError, match=r"bundle.yaml:\d+: malformed YAML"):
        spec.load(path)


def test_wrong_api_version(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("v1alpha1", "v9"))
    with pytest.raises(SpecError, match=r":1: apiVersion"):
        spec.load(path)


def test_not_utf8_and_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bundle.yaml"
    bad.write_bytes(b"\xff\xfe" + MINIMAL.encode("utf-16-le"))
    with pytest.raises(SpecError, match="not UTF-8"):
        spec.load(bad)
    with pytest.raises(SpecError, match="cannot read"):
        spec.load(tmp_path / "nope.yaml")


def test_charts_by_reference(tmp_path: Path) -> None:
    from bundler.spec import load
    spec_file = tmp_path / "bundle.yaml"
    spec_file.write_text("""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {name: x, version: "1"}
localRegistry: {host: r.local}
sources:
  charts:
    - {repo: "https://charts.example.com/stable/", name: app, version: "^1.2", provenance: {keyring: k.gpg}}
    - {chart: "oci://reg.example.com/charts/tool", version: "2.0.0", release: t}
    - {repo: "oci://reg.example.com/charts", name: lib, version: "1.0.0"}
  chartRepositories: [{name: bitnami, url: "https://charts.bitnami.com/bitnami/"}]
""")
    spec = load(spec_file)
    app, tool, lib = (c.remote for c in spec.charts)
    assert app is not None and tool is not None and lib is not None
    assert (app.repo, app.name, app.version, spec.charts[0].release) == ("https://charts.example.com/stable", "app",
                                                                        "^1.2", "app")
    assert app.provenance is not None and app.provenance.keyring == tmp_path / "k.gpg" and app.provenance.required
    assert (tool.repo, tool.name, tool.is_oci, spec.charts[1].release) == ("oci://reg.example.com/charts", "tool",
                                                                          True, "t")
    assert str(lib) == "oci://reg.example.com/charts/lib:1.0.0" and str(app) == "app ^1.2 from https://charts.example.com/stable"
    assert spec.chart_repositories == (("bitnami", "https://charts.bitnami.com/bitnami"),)
    spec_file.write_text(spec_file.read_text().replace('release: t}', 'release: t, path: x}'))
    with pytest.raises(SpecError, match=r"bundle.yaml:8: sources.charts\[1\]: path and chart exclude each other"):
        load(spec_file)


@pytest.mark.parametrize("entry, needle", [
    ("{repo: 'https://c.example.com', name: app}", "repo: needs version"),
    ("{path: chart, version: '1'}", "version only go with a chart by reference"),
    ("{chart: 'oci://r.example.com/c/app', version: '1', name: app}", "name only go with"),
    ("{release: x}", "'path' is a required property"),
])
def test_chart_entry_forms(tmp_path: Path, entry: str, needle: str) -> None:
    (tmp_path / "bundle.yaml").write_text("apiVersion: airgap-bundle.dev/v1alpha1\nkind: Bundle\n"
                                          "metadata: {name: x, version: '1'}\nlocalRegistry: {host: r.local}\n"
                                          f"sources:\n  charts:\n    - {entry}\n")
    with pytest.raises(SpecError, match=needle):
        spec.load(tmp_path / "bundle.yaml")
