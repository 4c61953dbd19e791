"""`airgap-bundle crossplane check`: text and JSON output, exit codes 0/1/2, spec input."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import RunCli
from tests.support.crossplane import FIXTURES, PACKAGES, arg

V2 = ["provider-family-aws-v2.0.0", "provider-aws-s3-v2.0.0", "function-patch-and-transform-v0.10.0",
      "function-auto-ready-v0.5.0"]
GOOD = FIXTURES / "manifests" / "v2-good.yaml"
LEGACY = FIXTURES / "manifests" / "v1-legacy.yaml"


def _packages(names: list[str]) -> list[str]:
    return [x for n in names for x in ("--package", arg(n))]


def test_pass_exits_0_with_json(run_cli: RunCli) -> None:
    r = run_cli("crossplane", "check", "--target", "v2.0.0", *_packages(V2), str(GOOD), "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "pass" and out["target"] == "2.0.0"
    assert all(f["severity"] != "error" for f in out["findings"])


def test_fail_exits_1_and_lists_findings(run_cli: RunCli) -> None:
    names = ["provider-family-aws-v1.7.0", "provider-aws-s3-v1.7.0"]
    r = run_cli("crossplane", "check", "--target", "2.0", *_packages(names), str(LEGACY), "--format", "json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["verdict"] == "fail"
    first = out["findings"][0]
    assert set(first) == {"rule", "severity", "message", "file", "line", "resource", "path"}
    assert {f["rule"] for f in out["findings"] if f["severity"] == "error"} == \
        {"XP2-001", "XP2-002", "XP2-003", "XP2-005"}
    text = run_cli("crossplane", "check", "--target", "2.0", *_packages(names), str(LEGACY))
    assert text.returncode == 1
    assert f"{LEGACY}:3: error XP2-002: ControllerConfig debug is removed" in text.stdout
    assert text.stdout.rstrip().endswith("fail: 7 error(s), 1 warning(s), 0 info")


def test_v1_target_only_warns(run_cli: RunCli) -> None:
    # On 1.19 the unqualified reference means xpkg.upbound.io, which the bundle carries.
    names = ["provider-family-aws-v1.7.0", "provider-aws-s3-v1.7.0"]
    r = run_cli("crossplane", "check", "--target", "1.19", *_packages(names), str(LEGACY))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warn XP2-002" in r.stdout
    # On 1.20 the default registry moved to xpkg.crossplane.io: the bundle lacks that package.
    r20 = run_cli("crossplane", "check", "--target", "1.20", *_packages(names), str(LEGACY))
    assert r20.returncode == 1 and "reads it as xpkg.crossplane.io/upbound/provider-family-aws" in r20.stdout


def test_bad_input_exits_2(run_cli: RunCli, tmp_path: Path) -> None:
    # Each case must be the tool's own one-line error (airgap-bundle: error: ...), never click's usage text.
    def refused(*args: str) -> str:
        r = run_cli("crossplane", "check", *args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.startswith("airgap-bundle: error: ") and len(r.stderr.splitlines()) == 1, r.stderr
        assert "Usage:" not in r.stderr and "Traceback" not in r.stderr
        return r.stderr

    assert "invalid Crossplane target version 'latest'" in refused("--target", "latest", str(GOOD))
    assert f"{tmp_path / 'nowhere'} does not exist" in refused("--package", str(tmp_path / "nowhere"), str(GOOD))
    assert "is not a fully qualified reference with a tag" in refused(
        "--package", f"provider-aws-s3:v2.0.0={PACKAGES / 'provider-aws-s3-v2.0.0'}", str(GOOD))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    assert f"{bad}:" in (err := refused(str(bad))) and "malformed YAML" in err
    missing = tmp_path / "missing.yaml"
    assert f"airgap-bundle: error: {missing}: cannot read: [Errno 2] No such file or directory" in refused(str(missing))
    assert "nothing to check" in refused()  # e.g. a CI glob that matched nothing: not a pass


def test_a_spec_with_charts_is_refused_not_half_checked(run_cli: RunCli, tmp_path: Path) -> None:
    # `crossplane check SPEC` reads only plain manifests: a spec that also renders charts or Kustomize
    # bases would be checked in part, so it is refused (fail closed) and told to render first.
    (tmp_path / "xp.yaml").write_text(GOOD.read_text())
    for sources in ("  charts: [{path: chart, release: x}]", "  kustomize: [{path: base}]"):
        (tmp_path / "bundle.yaml").write_text(f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: xp, version: 1.0.0}}
localRegistry: {{host: registry.airgap.local:5000}}
sources:
  manifests: [{{path: xp.yaml}}]
{sources}
crossplane: {{target: "2.0"}}
""")
        r = run_cli("crossplane", "check", str(tmp_path / "bundle.yaml"))
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"airgap-bundle: error: {tmp_path / 'bundle.yaml'}: the spec renders charts or Kustomize bases, " \
               "which `crossplane check` does not do" in r.stderr
        assert r.stdout == "" and "Traceback" not in r.stderr


def test_spec_input_takes_target_packages_and_waivers(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    kcl = GOOD.read_text().replace("  - step: ready\n", """  - step: kcl
    functionRef:
      name: crossplane-contrib-function-kcl
    input:
      apiVersion: krm.kcl.dev/v1alpha1
      kind: KCLInput
      spec: {source: "items = []"}
  - step: ready
""")
    (tmp_path / "manifests" / "xp.yaml").write_text(kcl)
    packages = "\n".join(f"    - ref: {arg(n).split('=')[0]}\n      path: {arg(n).split('=')[1]}"
                         for n in [*V2, "function-kcl-v0.11.0"])
    spec = f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: xp, version: 1.0.0}}
localRegistry: {{host: registry.airgap.local:5000}}
sources:
  manifests:
    - path: manifests/*.yaml
crossplane:
  target: "2.0"
  packages:
{packages}
"""
    (tmp_path / "bundle.yaml").write_text(spec)
    r = run_cli("crossplane", "check", str(tmp_path / "bundle.yaml"), "--format", "json")
    assert r.returncode == 1, r.stderr
    assert [f["rule"] for f in json.loads(r.stdout)["findings"] if f["severity"] == "error"] == ["PV-003"]
    (tmp_path / "bundle.yaml").write_text(spec + """  waivers:
    - composition: xbuckets-aws
      step: kcl
      produces: [{apiVersion: s3.aws.m.upbound.io/v1beta1, kind: Bucket}]
      reason: reviewed; renders one namespaced Bucket
""")
    r = run_cli("crossplane", "check", str(tmp_path / "bundle.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "info PV-003" in r.stdout and "target 2.0.0" in r.stdout
    # --target overrides the spec's
    r = run_cli("crossplane", "check", "--target", "1.20", str(tmp_path / "bundle.yaml"), "--format", "json")
    assert r.returncode == 1 and json.loads(r.stdout)["target"] == "1.20.0"


CONFIGURATION = """\
apiVersion: meta.pkg.crossplane.io/v1
kind: Configuration
metadata:
  name: platform-storage
spec:
  crossplane: {version: ">=v2.0.0-0"}
  dependsOn:
  - {apiVersion: pkg.crossplane.io/v1, kind: Provider, package: xpkg.upbound.io/upbound/provider-aws-s3,
     version: ">=v2.0.0"}
  - {apiVersion: pkg.crossplane.io/v1, kind: Function,
     package: xpkg.crossplane.io/crossplane-contrib/function-patch-and-transform, version: ">=v0.10.0"}
"""


def test_local_root_package_needs_no_reference_until_something_depends_on_it(run_cli: RunCli,
                                                                             tmp_path: Path) -> None:
    # A Configuration under development (crossplane.yaml-style package.yaml, never pushed) is the root
    # being checked: its dependencies must be in the bundle, but it needs no published identity.
    root = tmp_path / "platform-storage"
    root.mkdir()
    (root / "package.yaml").write_text(CONFIGURATION)
    r = run_cli("crossplane", "check", "--target", "2.0", *_packages(V2), "--package", str(root), str(GOOD),
                "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["verdict"] == "pass"
    # Its dependencies are still checked: without the provider it fails, naming what is missing.
    without = [n for n in V2 if n != "provider-aws-s3-v2.0.0"]
    r = run_cli("crossplane", "check", "--target", "2.0", *_packages(without), "--package", str(root), str(GOOD))
    assert r.returncode == 1 and "unpublished/platform-storage depends on xpkg.upbound.io/upbound/provider-aws-s3" \
        in r.stdout
    # Something installs it: now its identity matters, and the message says how to give it.
    install = tmp_path / "install.yaml"
    install.write_text("apiVersion: pkg.crossplane.io/v1\nkind: Configuration\nmetadata: {name: platform}\n"
                       "spec: {package: xpkg.example.com/acme/platform-storage:v1.0.0}\n")
    r = run_cli("crossplane", "check", "--target", "2.0", *_packages(V2), "--package", str(root), str(GOOD),
                str(install))
    assert r.returncode == 1
    assert (f"installs xpkg.example.com/acme/platform-storage:v1.0.0, but the bundle carries no version of it; "
            f"a package read without REF= has no published identity ({root / 'package.yaml'} (Configuration "
            f"platform-storage)): if it is the one meant, pass --package "
            f"xpkg.example.com/acme/platform-storage:VERSION=PATH") in r.stdout
    # Given as REF=PATH, the same package satisfies the install.
    r = run_cli("crossplane", "check", "--target", "2.0", *_packages(V2), "--package",
                f"xpkg.example.com/acme/platform-storage:v1.0.0={root}", str(GOOD), str(install))
    assert r.returncode == 0, r.stdout
