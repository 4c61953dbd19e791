"""The Crossplane gate's rule catalogue: for each rule a passing and a failing case.

Packages are the fixtures under tests/fixtures/crossplane/packages, modelled on what the real
providers serve at the named tags (their published CRDs; the rules: docs/crossplane.md).
"""

from __future__ import annotations

import pytest

from bundler.crossplane import GVK, Target, Waiver, require
from bundler.errors import CrossplaneError, UsageError
from tests.support.crossplane import FIXTURES, rules, run

V2_AWS = ["provider-family-aws-v2.0.0", "provider-aws-s3-v2.0.0", "function-patch-and-transform-v0.10.0",
          "function-auto-ready-v0.5.0"]
V1_AWS = ["provider-family-aws-v1.7.0", "provider-aws-s3-v1.7.0", "function-patch-and-transform-v0.10.0",
          "function-auto-ready-v0.5.0"]
GOOD = (FIXTURES / "manifests" / "v2-good.yaml").read_text()

XRD_V2 = """
apiVersion: apiextensions.crossplane.io/v2
kind: CompositeResourceDefinition
metadata: {name: xbuckets.example.org}
spec:
  group: example.org
  names: {kind: XBucket, plural: xbuckets}
  {scope}
  versions: [{name: v1alpha1, served: true, referenceable: true}]
"""
XRD_V1 = """
apiVersion: apiextensions.crossplane.io/v1
kind: CompositeResourceDefinition
metadata: {name: xbuckets.example.org}
spec:
  group: example.org
  names: {kind: XBucket, plural: xbuckets}
  versions: [{name: v1alpha1, served: true, referenceable: true}]
"""


def xrd(version: str = "v2", scope: str = "") -> str:
    return (XRD_V2.replace("{scope}", f"scope: {scope}" if scope else "") if version == "v2" else XRD_V1)


def comp(*bases: str, extra_steps: str = "", spec_extra: str = "",
         fn: str = "crossplane-contrib-function-patch-and-transform",
         input_extra: str = "") -> str:
    resources = "".join(f"\n      - name: r{i}\n        base: {b}" for i, b in enumerate(bases))
    return f"""
apiVersion: apiextensions.crossplane.io/v1
kind: Composition
metadata: {{name: xbuckets}}
spec:
  compositeTypeRef: {{apiVersion: example.org/v1alpha1, kind: XBucket}}
  mode: Pipeline{spec_extra}
  pipeline:
  - step: pt
    functionRef: {{name: {fn}}}
    input:
      apiVersion: pt.fn.crossplane.io/v1beta1
      kind: Resources{input_extra}
      resources:{resources or ' []'}{extra_steps}
"""


def docs(*parts: str) -> str:
    return "\n---\n".join(parts)


M_BUCKET = "{apiVersion: s3.aws.m.upbound.io/v1beta1, kind: Bucket, spec: {forProvider: {region: eu-west-1}}}"
BUCKET_V1B2 = "{apiVersion: s3.aws.upbound.io/v1beta2, kind: Bucket, spec: {forProvider: {region: eu-west-1}}}"


def test_good_v2_bundle_passes() -> None:
    report = run(GOOD, V2_AWS)
    assert report.verdict == "pass", report.findings
    assert not [f for f in report.findings if f.severity != "info"]
    assert require(report) is report


# --- XP2-001 native patch-and-transform ----------------------------------------------------------

RESOURCES_MODE = """
apiVersion: apiextensions.crossplane.io/v1
kind: Composition
metadata: {name: legacy}
spec:
  compositeTypeRef: {apiVersion: example.org/v1alpha1, kind: XBucket}
  resources:
  - name: bucket
    base: {apiVersion: s3.aws.upbound.io/v1beta1, kind: Bucket, spec: {forProvider: {region: eu-west-1}}}
  patchSets: [{name: common, patches: []}]
"""


def test_xp2_001_resources_mode_fails_on_v2_warns_on_1_20() -> None:
    report = run(docs(xrd("v1"), RESOURCES_MODE), V1_AWS, target="2.0")
    found = [f for f in report.findings if f.rule == "XP2-001"]
    assert {f.path for f in found} == {"spec", "spec.resources", "spec.patchSets"}
    assert all(f.severity == "error" for f in found) and report.verdict == "fail"
    assert found[0].file == "test.yaml" and found[0].resource == "Composition/legacy"
    v1 = run(docs(xrd("v1"), RESOURCES_MODE), V1_AWS, target="1.20")
    assert {f.severity for f in v1.findings if f.rule == "XP2-001"} == {"warn"} and v1.verdict == "pass"
    assert "XP2-001" not in rules(run(docs(xrd("v1"), RESOURCES_MODE), V1_AWS, target="1.16"), "warn")


def test_xp2_001_pipeline_mode_passes() -> None:
    assert "XP2-001" not in rules(run(docs(xrd(), comp(M_BUCKET)), V2_AWS), "error")


# --- XP2-002 ControllerConfig ---------------------------------------------------------------------

def test_xp2_002_controller_config() -> None:
    manifest = (FIXTURES / "manifests" / "v1-legacy.yaml").read_text()
    report = run(manifest, V1_AWS, target="2.0")
    found = {(f.resource, f.path, f.line) for f in report.findings if f.rule == "XP2-002"}
    assert found == {("ControllerConfig/debug", None, 3),
                     ("Provider/provider-aws-s3", "spec.controllerConfigRef", 17)}
    assert {f.severity for f in run(manifest, V1_AWS, target="1.20").findings if f.rule == "XP2-002"} == {"warn"}
    assert "XP2-002" not in rules(run(GOOD, V2_AWS), "error") | rules(run(GOOD, V2_AWS), "warn")


# --- XP2-003 external secret stores --------------------------------------------------------------

def test_xp2_003_external_secret_stores() -> None:
    store = "apiVersion: aws.upbound.io/v1alpha1\nkind: StoreConfig\nmetadata: {name: vault}\nspec: {type: Vault}"
    ess_comp = comp(M_BUCKET, spec_extra="\n  publishConnectionDetailsWithStoreConfigRef: {name: vault}").replace(
        "region: eu-west-1}", "region: eu-west-1}, publishConnectionDetailsTo: {name: x}")
    args = ("apiVersion: pkg.crossplane.io/v1beta1\nkind: DeploymentRuntimeConfig\nmetadata: {name: ess}\nspec:\n"
            "  deploymentTemplate: {spec: {template: {spec: {containers: [{name: package-runtime, "
            "args: [--enable-external-secret-stores]}]}}}}")
    report = run(docs(xrd(), ess_comp, store, args), V2_AWS)
    paths = {f.path for f in report.findings if f.rule == "XP2-003" and f.severity == "error"}
    assert paths == {None, "spec.publishConnectionDetailsWithStoreConfigRef",
                     "spec.pipeline[0].input.resources[0].base.spec.publishConnectionDetailsTo",
                     "spec.deploymentTemplate.spec.template.spec.containers[0].args[0]"}
    # the v1.20 CRD default {name: default} is only a warning, as upstream's upgrade check skips it
    default = run(docs(xrd(), comp(M_BUCKET, spec_extra="\n  publishConnectionDetailsWithStoreConfigRef: "
                                                         "{name: default}")), V2_AWS)
    assert "XP2-003" in rules(default, "warn") and "XP2-003" not in rules(default)
    assert "XP2-003" not in rules(run(GOOD, V2_AWS))


def test_xp2_003_ignores_crd_schemas() -> None:
    # A CRD in the manifests that *describes* publishConnectionDetailsTo is not a use of it.
    crd = (FIXTURES / "packages" / "provider-aws-s3-v1.7.0" / "package.yaml").read_text().split("---", 1)[1]
    assert "XP2-003" not in rules(run(docs(GOOD, crd), V2_AWS))
    schema_xrd = GOOD.replace("        type: object\n---", "        type: object\n        properties:\n"
                              "          publishConnectionDetailsTo: {type: object}\n---", 1)
    assert "publishConnectionDetailsTo" in schema_xrd
    assert "XP2-003" not in rules(run(schema_xrd, V2_AWS))


# --- XP2-004 XR connection details ----------------------------------------------------------------

def test_xp2_004_connection_details() -> None:
    xrd_keys = xrd("v1").replace("  versions:", "  scope: Namespaced\n  connectionSecretKeys: [url]\n  versions:")
    conn = comp(M_BUCKET, spec_extra="\n  writeConnectionSecretsToNamespace: crossplane-system").replace(
        "        base:", "        connectionDetails: [{name: url, type: FromFieldPath, fromFieldPath: status.url}]\n"
        "        base:")
    report = run(docs(xrd_keys, conn), V2_AWS)
    found = {(f.severity, f.path) for f in report.findings if f.rule == "XP2-004"}
    assert found == {("error", "spec.connectionSecretKeys"), ("warn", "spec.writeConnectionSecretsToNamespace"),
                     ("warn", "spec.pipeline[0].input.resources[0].connectionDetails")}
    # function-patch-and-transform >= v0.10.0 with input.writeConnectionSecretToRef keeps them: info
    kept = run(docs(xrd(), comp(M_BUCKET, input_extra="\n      writeConnectionSecretToRef: {name: c}")
                    .replace("        base:", "        connectionDetails: [{name: url}]\n        base:")), V2_AWS)
    assert {f.severity for f in kept.findings if f.rule == "XP2-004"} == {"info"}
    # LegacyCluster XRs keep native connection details: info only
    legacy = run(docs(xrd("v1").replace("  versions:", "  connectionSecretKeys: [url]\n  versions:"),
                      comp(BUCKET_V1B2)), V1_AWS)
    assert {f.severity for f in legacy.findings if f.rule == "XP2-004"} == {"info"}


# --- XP2-005 fully qualified package references ---------------------------------------------------

def test_xp2_005_unqualified_package_reference() -> None:
    bad = GOOD.replace("package: xpkg.upbound.io/upbound/provider-family-aws:v2.0.0",
                       "package: upbound/provider-family-aws:v2.0.0")
    bad = bad.replace("function-auto-ready:v0.5.0", "function-auto-ready")
    report = run(bad, V2_AWS)
    found = {f.resource: f.message for f in report.findings if f.rule == "XP2-005" and f.severity == "error"}
    assert set(found) == {"Provider/provider-family-aws", "Function/function-auto-ready"}
    assert "no registry host" in found["Provider/provider-family-aws"]
    assert "neither a tag nor a digest" in found["Function/function-auto-ready"]
    assert {f.severity for f in run(bad, V2_AWS, target="1.20").findings if f.rule == "XP2-005"} == {"warn"}
    assert "XP2-005" not in rules(run(GOOD, V2_AWS))


def test_xp2_005_depends_on_needs_registry_host(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bundler.reference import ImageRef
    from bundler.xpkg import read_local
    from tests.support.crossplane import PACKAGES, pkg  # noqa: F401
    text = (PACKAGES / "provider-aws-s3-v2.0.0" / "package.yaml").read_text()
    (tmp_path / "package.yaml").write_text(text.replace("package: xpkg.upbound.io/upbound/provider-family-aws",
                                                        "package: upbound/provider-family-aws"))
    local = read_local(tmp_path, ImageRef.parse("xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0"))
    packages = [local, *[p for p in V2_AWS if p != "provider-aws-s3-v2.0.0"]]
    found = [f for f in run(GOOD, packages).findings if f.rule == "XP2-005"]
    assert [(f.severity, f.path) for f in found] == [("error", "spec.dependsOn[0].package")]


# --- XP2-006 XRD validity ---------------------------------------------------------------------------

def test_xp2_006_xrd_versions_per_target() -> None:
    assert "XP2-006" in rules(run(docs(xrd("v2"), comp(BUCKET_V1B2)), V1_AWS, target="1.20"))
    assert "XP2-006" in rules(run(docs(xrd("v1").replace("  versions:", "  scope: Cluster\n  versions:"),
                                       comp(BUCKET_V1B2)), V1_AWS, target="1.20"))
    v2_bad = run(docs(xrd("v2", "LegacyCluster").replace("  versions:", "  claimNames: {kind: Bucket, plural: b}\n"
                                                                         "  versions:"), comp(M_BUCKET)), V2_AWS)
    assert {f.path for f in v2_bad.findings if f.rule == "XP2-006"} == {"spec.scope", "spec.claimNames"}
    assert "XP2-006" in rules(run(docs(xrd("v1"), comp(BUCKET_V1B2)), V1_AWS), "warn")
    assert "XP2-006" not in rules(run(GOOD, V2_AWS)) | rules(run(GOOD, V2_AWS), "warn")
    assert "XP2-006" not in rules(run(docs(xrd("v1"), comp(BUCKET_V1B2)), V1_AWS, target="1.20"))


# --- XP2-007 core API versions ------------------------------------------------------------------------

def test_xp2_007_core_versions_per_target() -> None:
    env = "apiVersion: apiextensions.crossplane.io/v1alpha1\nkind: EnvironmentConfig\nmetadata: {name: e}\ndata: {}"
    usage = "apiVersion: apiextensions.crossplane.io/v1beta1\nkind: Usage\nmetadata: {name: u}\nspec: {}"
    report = run(docs(GOOD, env, usage), V2_AWS)
    assert [f.resource for f in report.findings if f.rule == "XP2-007" and f.severity == "error"] == \
        ["EnvironmentConfig/e"]
    assert [f.resource for f in report.findings if f.rule == "XP2-007" and f.severity == "warn"] == ["Usage/u"]
    v1 = run(docs(env, usage), V1_AWS, target="1.20")
    assert "XP2-007" not in rules(v1) | rules(v1, "warn")


# --- XP2-008 composition scope ----------------------------------------------------------------------

def test_xp2_008_scope_rules() -> None:
    # Namespaced XR composing a cluster-scoped Bucket: error; with metadata.namespace on a namespaced kind: warn
    cluster_bucket = "{apiVersion: s3.aws.upbound.io/v1beta1, kind: Bucket, spec: {forProvider: {region: x}}}"
    ns_bucket = ("{apiVersion: s3.aws.m.upbound.io/v1beta1, kind: Bucket, metadata: {namespace: other}, "
                 "spec: {forProvider: {region: x}}}")
    report = run(docs(xrd("v2", "Namespaced"), comp(cluster_bucket, ns_bucket)), V2_AWS)
    found = {(f.severity, f.path) for f in report.findings if f.rule == "XP2-008"}
    assert found == {("error", "spec.pipeline[0].input.resources[0].base.apiVersion"),
                     ("warn", "spec.pipeline[0].input.resources[1].base.metadata.namespace")}
    # LegacyCluster XR composing a namespaced kind: error
    legacy = run(docs(xrd("v1"), comp(M_BUCKET)), V2_AWS)
    assert "XP2-008" in rules(legacy)
    # Cluster XR composes anything
    assert "XP2-008" not in rules(run(docs(xrd("v2", "Cluster"), comp(cluster_bucket, M_BUCKET)), V2_AWS))


# --- XP2-009 v2-only features on v1 ---------------------------------------------------------------------

def test_xp2_009_v2_features_on_v1_target() -> None:
    mrap = ("apiVersion: apiextensions.crossplane.io/v1alpha1\nkind: ManagedResourceActivationPolicy\n"
            "metadata: {name: aws}\nspec: {activate: ['*.aws.upbound.io']}")
    report = run(docs(xrd("v1"), comp(M_BUCKET), mrap), V2_AWS, target="1.20")
    found = {f.resource for f in report.findings if f.rule == "XP2-009"}
    assert found == {"Composition/xbuckets", "ManagedResourceActivationPolicy/aws"}
    assert "XP2-009" not in rules(run(docs(xrd("v1"), comp(BUCKET_V1B2)), V1_AWS, target="1.20"))


# --- PV-001 the provider version disagrees with the composition -----------------------------------------

def test_pv_001_version_not_served() -> None:
    """Bucket v1beta2 composed against provider-aws-s3 v1.6.0, which serves only v1beta1."""
    old = ["provider-family-aws-v1.6.0", "provider-aws-s3-v1.6.0", "function-patch-and-transform-v0.10.0"]
    text = docs(xrd("v1"), comp(BUCKET_V1B2))
    report = run(text, old, target="1.20")
    [f] = [f for f in report.findings if f.rule == "PV-001"]
    line = next(n for n, t in enumerate(text.splitlines(), 1) if "base: {apiVersion: s3.aws.upbound.io/v1beta2" in t)
    assert f.severity == "error" and "(b) version not served" in f.message
    assert "provider-aws-s3:v1.6.0 serves v1beta1" in f.message
    assert f.path == "spec.pipeline[0].input.resources[0].base.apiVersion" and f.line == line
    new = ["provider-family-aws-v1.7.0", "provider-aws-s3-v1.7.0", "function-patch-and-transform-v0.10.0"]
    assert run(docs(xrd("v1"), comp(BUCKET_V1B2)), new, target="1.20").verdict == "pass"


def test_pv_001_namespaced_group_with_v1_era_provider() -> None:
    report = run(docs(xrd(), comp(M_BUCKET)), V1_AWS)
    [f] = [f for f in report.findings if f.rule == "PV-001"]
    assert "(a) unknown group/kind" in f.message and ".m. groups come with v2-line providers" in f.message


def test_pv_001_missing_family_member_and_unknown_kind() -> None:
    instance = "{apiVersion: rds.aws.upbound.io/v1beta3, kind: Instance}"
    typo = "{apiVersion: s3.aws.upbound.io/v1beta1, kind: Bukket}"
    report = run(docs(xrd("v1"), comp(instance, typo)), V1_AWS, target="1.20")
    messages = sorted(f.message for f in report.findings if f.rule == "PV-001")
    assert "no bundled package ships group rds.aws.upbound.io" in messages[0]
    assert "ships group s3.aws.upbound.io but no kind Bukket" in messages[1]


def test_pv_001_provider_kubernetes_v1beta1_provider_config_never_existed() -> None:
    pc = "{apiVersion: kubernetes.crossplane.io/v1beta1, kind: ProviderConfig, spec: {}}"
    report = run(docs(xrd("v1"), comp(pc)), ["provider-kubernetes-v0.18.0", "function-patch-and-transform-v0.10.0"],
                 target="1.20")
    assert "PV-001" in rules(report)


def test_pv_001_builtin_core_and_xr_kinds_agree() -> None:
    secret = "{apiVersion: v1, kind: Secret, metadata: {name: s}}"
    nested = "{apiVersion: example.org/v1alpha1, kind: XBucket}"
    usage = "{apiVersion: protection.crossplane.io/v1beta1, kind: Usage}"
    report = run(docs(xrd("v2", "Namespaced"), comp(secret, nested, usage, M_BUCKET)), V2_AWS)
    assert "PV-001" not in rules(report)
    bad_xr = run(docs(xrd("v2", "Namespaced"), comp("{apiVersion: example.org/v2, kind: XBucket}")), V2_AWS)
    assert "XRD xbuckets.example.org does not serve v2" in next(f.message for f in bad_xr.findings
                                                                  if f.rule == "PV-001")


# --- PV-002 deprecated versions ----------------------------------------------------------------------------

def test_pv_002_deprecated_version_warns() -> None:
    obj = "{apiVersion: kubernetes.crossplane.io/v1alpha1, kind: Object, spec: {forProvider: {manifest: {}}}}"
    pkgs = ["provider-kubernetes-v0.18.0", "function-patch-and-transform-v0.10.0"]
    report = run(docs(xrd("v1"), comp(obj)), pkgs, target="1.20")
    assert "PV-002" in rules(report, "warn") and report.verdict == "pass"
    assert "use v1alpha2" in next(f.message for f in report.findings if f.rule == "PV-002")
    current = run(docs(xrd("v1"), comp(obj.replace("v1alpha1", "v1alpha2"))), pkgs, target="1.20")
    assert "PV-002" not in rules(current, "warn")


# --- PV-003 opaque templates -------------------------------------------------------------------------------

KCL_STEP = """
  - step: kcl
    functionRef: {name: crossplane-contrib-function-kcl}
    input:
      apiVersion: krm.kcl.dev/v1alpha1
      kind: KCLInput
      spec: {source: "items = [{apiVersion: 's3.aws.m.upbound.io/v1beta1', kind: 'Bucket'}]"}"""


def test_pv_003_opaque_step_fails_closed_unless_waived() -> None:
    pkgs = [*V2_AWS, "function-kcl-v0.11.0"]
    manifest = docs(xrd(), comp(M_BUCKET, extra_steps=KCL_STEP))
    report = run(manifest, pkgs)
    [f] = [f for f in report.findings if f.rule == "PV-003"]
    assert f.severity == "error" and f.path == "spec.pipeline[1].input" and "kcl" in f.message
    waiver = Waiver("xbuckets", "kcl", (GVK("s3.aws.m.upbound.io/v1beta1", "Bucket"),), "reviewed in PR 12")
    waived = run(manifest, pkgs, waivers=[waiver])
    assert waived.verdict == "pass" and "PV-003" in rules(waived, "info")
    # the declared kinds are checked like any template: a kind the bundle cannot serve still fails
    wrong = Waiver("xbuckets", None, (GVK("s3.aws.m.upbound.io/v1beta2", "Bucket"),), "reviewed")
    assert "PV-001" in rules(run(manifest, pkgs, waivers=[wrong]))
    stale = Waiver("other", "kcl", (GVK("v1", "Secret"),), "old")
    assert "PV-003" in rules(run(GOOD, V2_AWS, waivers=[stale]), "warn")


def test_waiver_needs_produces_and_reason() -> None:
    with pytest.raises(UsageError):
        Waiver("c", "s", (), "why")
    with pytest.raises(UsageError):
        Waiver("c", "s", (GVK("v1", "Secret"),), " ")


def test_pv_003_patch_that_writes_the_api_version_is_opaque() -> None:
    patched = comp(M_BUCKET).replace("        base:", "        patches: [{type: FromCompositeFieldPath, "
                                     "fromFieldPath: spec.apiVersion, toFieldPath: apiVersion}]\n        base:")
    report = run(docs(xrd(), patched), V2_AWS)
    assert "patches its apiVersion or kind" in next(f.message for f in report.findings if f.rule == "PV-003")
    other = comp(M_BUCKET).replace("        base:", "        patches: [{fromFieldPath: spec.region, "
                                   "toFieldPath: spec.forProvider.region}]\n        base:")
    assert "PV-003" not in rules(run(docs(xrd(), other), V2_AWS))


GOTEMPLATE = """
apiVersion: apiextensions.crossplane.io/v1
kind: Composition
metadata: {name: xbuckets}
spec:
  compositeTypeRef: {apiVersion: example.org/v1alpha1, kind: XBucket}
  mode: Pipeline
  pipeline:
  - step: render
    functionRef: {name: crossplane-contrib-function-go-templating}
    input:
      apiVersion: gotemplating.fn.crossplane.io/v1beta1
      kind: GoTemplate
      source: Inline
      inline:
        template: |
          {{- $region := .observed.composite.resource.spec.region }}
          apiVersion: s3.aws.m.upbound.io/v1beta1
          kind: Bucket
          metadata:
            annotations:
              gotemplating.fn.crossplane.io/composition-resource-name: bucket
          spec:
            forProvider:
              region: {{ $region }}
          ---
          apiVersion: example.org/v1alpha1
          kind: XBucket
          status: {ready: true}
          ---
          apiVersion: meta.gotemplating.fn.crossplane.io/v1alpha1
          kind: CompositeConnectionDetails
          data: {}
          ---
          apiVersion: {{ .observed.composite.resource.spec.apiVersion }}
          kind: Bucket
"""


def test_pv_003_inline_go_templates_are_read_and_templated_kinds_are_opaque() -> None:
    pkgs = [*V2_AWS, "function-go-templating-v0.11.0"]
    literal = GOTEMPLATE.split("          ---\n          apiVersion: {{")[0]
    ok = run(docs(xrd(), literal), pkgs)
    assert ok.verdict == "pass", ok.findings
    opaque = run(docs(xrd(), GOTEMPLATE), pkgs)
    [f] = [f for f in opaque.findings if f.rule == "PV-003"]
    assert "templated apiVersion/kind" in f.message
    # the literal Bucket is still checked, and its line points into the inline template
    against_v1 = run(docs(xrd(), literal), [*V1_AWS, "function-go-templating-v0.11.0"])
    [pv] = [f for f in against_v1.findings if f.rule == "PV-001"]
    assert pv.line == 29 and "s3.aws.m.upbound.io/v1beta1 Bucket" in pv.message


# --- PV-004 compositeTypeRef ---------------------------------------------------------------------------------

def test_pv_004_composite_type_ref_resolves() -> None:
    report = run(comp(M_BUCKET), V2_AWS)
    assert "no bundled XRD defines example.org/v1alpha1 XBucket" in next(
        f.message for f in report.findings if f.rule == "PV-004")
    not_ref = xrd().replace("referenceable: true", "referenceable: false")
    assert "PV-004" in rules(run(docs(not_ref, comp(M_BUCKET)), V2_AWS))
    assert "PV-004" not in rules(run(GOOD, V2_AWS))


# --- PV-005 functions ----------------------------------------------------------------------------------------

def test_pv_005_function_resolution_input_and_capabilities() -> None:
    missing = run(docs(xrd(), comp(M_BUCKET, fn="function-nope")), V2_AWS)
    assert "function 'function-nope' is not in the bundle" in next(
        f.message for f in missing.findings if f.rule == "PV-005")
    # dependency-installed name: ToDNSLabel of the repository path
    dep_name = run(docs(xrd(), comp(M_BUCKET, fn="crossplane-contrib-function-patch-and-transform")), V2_AWS)
    assert "PV-005" not in rules(dep_name)
    # writeConnectionSecretToRef needs function-patch-and-transform >= v0.10.0
    old_pt = ["provider-family-aws-v2.0.0", "provider-aws-s3-v2.0.0", "function-patch-and-transform-v0.9.0"]
    too_new = run(docs(xrd(), comp(M_BUCKET, fn="crossplane-contrib-function-patch-and-transform",
                                   input_extra="\n      writeConnectionSecretToRef: {name: c}")), old_pt)
    assert "input field 'writeConnectionSecretToRef' is not in the" in next(
        f.message for f in too_new.findings if f.rule == "PV-005")
    # a function that only declares the operation capability cannot run a composition step on v2
    op_only = run(docs(xrd(), comp(M_BUCKET, fn="crossplane-contrib-function-operation-only")),
                  [*V2_AWS, "function-operation-only-v0.1.0"])
    assert "does not declare the 'composition' capability" in " ".join(
        f.message for f in op_only.findings if f.rule == "PV-005")
    # input kind the function does not serve
    wrong_input = run(docs(xrd(), comp(M_BUCKET).replace("pt.fn.crossplane.io/v1beta1", "pt.fn.crossplane.io/v1")),
                      V2_AWS)
    assert "input pt.fn.crossplane.io/v1 Resources is not served" in " ".join(
        f.message for f in wrong_input.findings if f.rule == "PV-005")


# --- PV-006 single owner -------------------------------------------------------------------------------------

def test_pv_006_monolith_and_family_member_conflict() -> None:
    report = run(docs(xrd("v1"), comp(BUCKET_V1B2)), [*V1_AWS, "provider-aws-v1.7.0"], target="1.20")
    found = [f for f in report.findings if f.rule == "PV-006"]
    assert any("(c) ambiguous owner" in f.message for f in found)
    assert any("CRD buckets.s3.aws.upbound.io is shipped by both" in f.message for f in found)
    assert "PV-006" not in rules(run(docs(xrd("v1"), comp(BUCKET_V1B2)), V1_AWS, target="1.20"))


def test_pv_006_same_package_from_two_registries() -> None:
    from tests.support.crossplane import pkg
    moved = pkg("provider-aws-s3-v1.7.0", "xpkg.crossplane.io/crossplane-contrib/provider-aws-s3:v1.7.0")
    report = run(docs(xrd("v1"), comp(BUCKET_V1B2)), [*V1_AWS, moved], target="1.20")
    assert "PV-006" in rules(report)


# --- PV-007 family lockstep ----------------------------------------------------------------------------------

def test_pv_007_family_member_on_different_version() -> None:
    skew = ["provider-family-aws-v1.6.0", "provider-aws-s3-v1.7.0", "function-patch-and-transform-v0.10.0"]
    report = run(docs(xrd("v1"), comp(BUCKET_V1B2)), skew, target="1.20")
    [f] = [f for f in report.findings if f.rule == "PV-007"]
    assert "provider-aws-s3:v1.7.0 is a member of provider-family-aws at v1.7.0, but the family is at v1.6.0" \
        in f.message
    assert "PV-007" not in rules(run(docs(xrd("v1"), comp(BUCKET_V1B2)), V1_AWS, target="1.20"))


# --- PV-008 dependencies closed in the bundle ----------------------------------------------------------------

def test_pv_008_dependency_missing_from_bundle() -> None:
    report = run(docs(xrd("v1"), comp(BUCKET_V1B2)),
                 ["provider-aws-s3-v1.7.0", "function-patch-and-transform-v0.10.0"], target="1.20")
    [f] = [f for f in report.findings if f.rule == "PV-008"]
    assert "which the bundle does not carry" in f.message and f.path == "spec.dependsOn[0]"


def test_pv_008_unsatisfiable_constraints(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bundler.reference import ImageRef
    from bundler.xpkg import read_local
    conf = """
apiVersion: meta.pkg.crossplane.io/v1
kind: Configuration
metadata: {name: platform}
spec:
  crossplane: {version: ">=v2.0.0-0"}
  dependsOn:
  - {apiVersion: pkg.crossplane.io/v1, kind: Provider, package: xpkg.upbound.io/upbound/provider-aws-s3,
     version: ">=v1.7.0, <v2.0.0"}
  - {apiVersion: pkg.crossplane.io/v1, kind: Function,
     package: xpkg.crossplane.io/crossplane-contrib/function-patch-and-transform, version: ">=1.0 <2.0"}
"""
    (tmp_path / "package.yaml").write_text(conf)
    platform = read_local(tmp_path, ImageRef.parse("xpkg.example.com/acme/platform:v1.0.0"))
    report = run(GOOD, [*V2_AWS, platform])
    found = " | ".join(f.message for f in report.findings if f.rule == "PV-008")
    assert found.count(" | ") == 1
    assert "provider-aws-s3 '>=v1.7.0, <v2.0.0': the bundle carries v2.0.0" in found
    assert "improper constraint '>=1.0 <2.0'" in found  # v1.5.0 has no space-as-AND: fail closed
    # the same configuration on a 1.20 target: its crossplane.version excludes the target
    v1 = run(docs(xrd("v1"), comp(BUCKET_V1B2)), [*V1_AWS, platform], target="1.20")
    assert any("requires Crossplane '>=v2.0.0-0'; target is 1.20.0" in f.message for f in v1.findings)


def test_pv_008_skip_dependency_resolution_warns() -> None:
    report = run(GOOD.replace("  runtimeConfigRef:", "  skipDependencyResolution: true\n  runtimeConfigRef:"),
                 V2_AWS)
    assert "PV-008" in rules(report, "warn") and report.verdict == "pass"


# --- PV-009 provider configs for namespaced MRs --------------------------------------------------------------

def test_pv_009_cluster_provider_config_needed() -> None:
    # provider-aws-s3 v2.0.0 with the v1 family package: no aws.m.upbound.io ClusterProviderConfig CRD
    pkgs = ["provider-family-aws-v1.7.0", "provider-aws-s3-v2.0.0", "function-patch-and-transform-v0.10.0",
            "function-auto-ready-v0.5.0"]
    report = run(GOOD, pkgs)
    assert "PV-009" in rules(report)
    explicit = run(docs(xrd(), comp(M_BUCKET.replace("spec: {", "spec: {providerConfigRef: {kind: ProviderConfig, "
                                                                 "name: team}, "))), pkgs)
    assert "PV-009" not in rules(explicit)
    # the bundle ships provider configs but no 'default' ClusterProviderConfig: warn
    cpc = "apiVersion: aws.m.upbound.io/v1beta1\nkind: ClusterProviderConfig\nmetadata: {name: team}\nspec: {}"
    assert "PV-009" in rules(run(docs(GOOD, cpc), V2_AWS), "warn")
    assert "PV-009" not in rules(run(docs(GOOD, cpc.replace("name: team", "name: default")), V2_AWS), "warn")


# --- PV-010 activation ---------------------------------------------------------------------------------------

def test_pv_010_mrap_must_activate_safe_start_resources() -> None:
    mrap = ("apiVersion: apiextensions.crossplane.io/v1alpha1\nkind: ManagedResourceActivationPolicy\n"
            "metadata: {name: only-ec2}\nspec:\n  activate: ['*.ec2.aws.m.upbound.io']")
    assert "PV-010" in rules(run(docs(GOOD, mrap), V2_AWS))
    ok = mrap.replace("'*.ec2.aws.m.upbound.io'", "'*.aws.m.upbound.io'")
    assert "PV-010" not in rules(run(docs(GOOD, ok), V2_AWS))
    exact = mrap.replace("'*.ec2.aws.m.upbound.io'", "buckets.s3.aws.m.upbound.io")
    assert "PV-010" not in rules(run(docs(GOOD, exact), V2_AWS))


# --- PV-011 schema validity ----------------------------------------------------------------------------------

def test_pv_011_schema_catches_fields_the_provider_dropped() -> None:
    bad = M_BUCKET.replace("spec: {", "spec: {deletionPolicy: Orphan, ")
    report = run(docs(xrd(), comp(bad)), V2_AWS)
    [f] = [f for f in report.findings if f.rule == "PV-011"]
    assert "deletionPolicy" in f.message and f.path == "spec.pipeline[0].input.resources[0].base.spec"
    wrong_type = M_BUCKET.replace("region: eu-west-1", "region: 5")
    assert "PV-011" in rules(run(docs(xrd(), comp(wrong_type)), V2_AWS))
    assert "PV-011" not in rules(run(GOOD, V2_AWS))


# --- PKG-001 / PKG-002 / PKG-003 --------------------------------------------------------------------------------

def test_pkg_001_structure(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bundler.reference import ImageRef
    from bundler.xpkg import read_local
    (tmp_path / "package.yaml").write_text(
        "apiVersion: meta.pkg.crossplane.io/v1\nkind: Provider\nmetadata: {name: p}\n---\n"
        "apiVersion: apiextensions.crossplane.io/v1\nkind: Composition\nmetadata: {name: c}\nspec: {}\n")
    p = read_local(tmp_path, ImageRef.parse("xpkg.example.com/acme/p:v1.0.0"))
    report = run("", [p])
    assert "is not allowed in a Provider package" in next(f.message for f in report.findings if f.rule == "PKG-001")
    (tmp_path / "package.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    empty = read_local(tmp_path, ImageRef.parse("xpkg.example.com/acme/p:v1.0.0"))
    assert "has no meta.pkg.crossplane.io object" in " ".join(f.message for f in run("", [empty]).findings)
    assert "PKG-001" not in rules(run(GOOD, V2_AWS))


def test_pkg_002_meta_versions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bundler.reference import ImageRef
    from bundler.xpkg import read_local
    (tmp_path / "package.yaml").write_text(
        "apiVersion: meta.pkg.crossplane.io/v1alpha1\nkind: Provider\nmetadata: {name: p}\nspec:\n"
        "  controller: {image: xpkg.example.com/acme/p-controller:v1.0.0}\n"
        "  dependsOn: [{provider: xpkg.upbound.io/upbound/provider-family-aws, version: '>=v2.0.0'}]\n")
    p = read_local(tmp_path, ImageRef.parse("xpkg.example.com/acme/p:v1.0.0"))
    report = run("", [p, "provider-family-aws-v2.0.0"])
    paths = {f.path for f in report.findings if f.rule == "PKG-002"}
    assert paths == {"apiVersion", "spec.dependsOn[0].provider", "spec.controller.image"}
    assert "PKG-002" not in rules(run(GOOD, V2_AWS), "warn")


def test_pkg_003_installed_packages_and_images_are_bundled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = run(GOOD.replace("function-auto-ready:v0.5.0", "function-auto-ready:v0.6.0"), V2_AWS)
    [f] = [f for f in report.findings if f.rule == "PKG-003"]
    assert "bundle carries xpkg.crossplane.io/crossplane-contrib/function-auto-ready:v0.5.0" in f.message
    image_config = ("apiVersion: pkg.crossplane.io/v1beta1\nkind: ImageConfig\nmetadata: {name: mirror}\nspec:\n"
                    "  matchImages: [{prefix: xpkg.upbound.io/upbound}, {prefix: ghcr.io/elsewhere}]\n"
                    "  rewriteImage: {prefix: registry.local/xpkg.upbound.io/upbound}")
    found = [f for f in run(docs(GOOD, image_config), V2_AWS).findings if f.rule == "PKG-003"]
    assert [f.path for f in found] == ["spec.matchImages[1].prefix"]
    # a v1 meta controller image must be in the bundle's image set
    from bundler.reference import ImageRef
    from bundler.xpkg import read_local
    (tmp_path / "package.yaml").write_text(
        "apiVersion: meta.pkg.crossplane.io/v1\nkind: Provider\nmetadata: {name: p}\nspec:\n"
        "  controller: {image: xpkg.example.com/acme/p-controller:v1.0.0}\n")
    p = read_local(tmp_path, ImageRef.parse("xpkg.example.com/acme/p:v1.0.0"))
    assert "PKG-003" in rules(run("", [p], target="1.20"))
    assert "PKG-003" not in rules(run("", [p], target="1.20", images=["xpkg.example.com/acme/p-controller:v1.0.0"]))


# --- verdict, require, target parsing --------------------------------------------------------------------------

def test_require_raises_crossplane_error_with_first_error() -> None:
    report = run(docs(xrd(), comp(M_BUCKET)), V1_AWS)
    with pytest.raises(CrossplaneError) as exc:
        require(report)
    assert exc.value.exit_code == 10 and "PV-001" in str(exc.value) and "test.yaml:" in str(exc.value)


@pytest.mark.parametrize("text,expected", [("2.0", "2.0.0"), ("v2.0.0", "2.0.0"), ("1.20", "1.20.0"),
                                           ("2", "2.0.0"), ("v2.1.3", "2.1.3")])
def test_target_parse(text: str, expected: str) -> None:
    assert str(Target.parse(text)) == expected


@pytest.mark.parametrize("text", ["", "latest", "3.0", "v2.x", "0.9"])
def test_target_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        Target.parse(text)


def test_v2_1_behaves_like_v2_0() -> None:
    assert run(GOOD, V2_AWS, target="2.1").verdict == "pass"
    assert "XP2-002" in rules(run((FIXTURES / "manifests" / "v1-legacy.yaml").read_text(), V1_AWS, target="2.1"))
