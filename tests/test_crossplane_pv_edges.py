"""The package-and-version rules (crossplane_pv.py) on the cases the rule catalogue does not reach:
templates without a kind or of a core kind Crossplane does not serve, two XRDs for one XR, Operations
and CronOperations that need the `operation` capability, a package bundled twice, dependencies and
constraints that cannot be read, a CRD version without a schema, and schemas with int-or-string and
nullable fields. Each case asserts the finding's rule and message."""

from __future__ import annotations

from bundler.reference import ImageRef
from bundler.xpkg import Package, parse_package_yaml
from tests.support.crossplane import run
from tests.test_crossplane_rules import M_BUCKET, V2_AWS, comp, docs, xrd

CONTRIB = "xpkg.crossplane.io/crossplane-contrib"


def _messages(report: object, rule: str, severity: str = "error") -> list[str]:
    return [f.message for f in report.findings if f.rule == rule and f.severity == severity]  # type: ignore[attr-defined]


def _package(ref: str, text: str) -> Package:
    return parse_package_yaml(text, ImageRef.parse(ref), f"{ref}-source")


def test_a_template_without_kind_and_a_core_kind_not_served() -> None:
    report = run(docs(xrd(), comp("{apiVersion: s3.aws.m.upbound.io/v1beta1}",
                                  "{apiVersion: pkg.crossplane.io/v1, kind: Nope}")), V2_AWS)
    assert _messages(report, "PV-001") == [
        "Composition xbuckets step pt: a composed template has no apiVersion or kind",
        "Composition xbuckets step pt: pkg.crossplane.io/v1 Nope is not served by Crossplane 2.0.0"]


def test_two_xrds_for_one_xr() -> None:
    second = xrd().replace("name: xbuckets.example.org", "name: xbuckets-again.example.org")
    report = run(docs(xrd(), second, comp(M_BUCKET)), V2_AWS)
    assert "Composition xbuckets: 2 XRDs define example.org XBucket (xbuckets.example.org, " \
           "xbuckets-again.example.org)" in _messages(report, "PV-004")


OPERATION = """
apiVersion: ops.crossplane.io/v1alpha1
kind: Operation
metadata: {name: once}
spec:
  pipeline:
  - not a step
  - step: run
    functionRef: {name: crossplane-contrib-function-operation-only}
---
apiVersion: ops.crossplane.io/v1alpha1
kind: CronOperation
metadata: {name: nightly}
spec:
  schedule: "0 3 * * *"
  operationTemplate:
    spec:
      pipeline:
      - step: run
        functionRef: {name: crossplane-contrib-function-patch-and-transform}
---
apiVersion: ops.crossplane.io/v1alpha1
kind: WatchOperation
metadata: {name: no-pipeline}
spec:
  operationTemplate: {spec: {}}
"""


def test_operations_need_functions_with_the_operation_capability() -> None:
    report = run(OPERATION, [*V2_AWS, "function-operation-only-v0.1.0"])
    assert _messages(report, "PV-005") == [
        f"CronOperation nightly: function {CONTRIB}/function-patch-and-transform:v0.10.0 does not declare the "
        "'operation' capability (has composition)"]


def test_a_package_bundled_twice() -> None:
    report = run(docs(xrd(), comp(M_BUCKET)), [*V2_AWS, "provider-aws-s3-v1.7.0"])
    assert any(m.startswith("package xpkg.upbound.io/upbound/provider-aws-s3 is bundled twice (")
               for m in _messages(report, "PV-006"))


META = """apiVersion: meta.pkg.crossplane.io/v1
kind: Configuration
metadata: {{name: {name}}}
spec:
  crossplane: {{version: '{crossplane}'}}
  dependsOn:
{deps}"""


def test_dependencies_and_constraints_that_cannot_be_read() -> None:
    base = _package("xpkg.upbound.io/acme/base:latest", "apiVersion: meta.pkg.crossplane.io/v1\nkind: Configuration\n"
                                                        "metadata: {name: base}\n")
    pinned = _package(f"xpkg.upbound.io/acme/pinned@sha256:{'a' * 64}",
                      "apiVersion: meta.pkg.crossplane.io/v1\nkind: Configuration\nmetadata: {name: pinned}\n")
    deps = ("  - {configuration: 'Not A Name!', version: '>=1'}\n"
            "  - {configuration: xpkg.upbound.io/acme/base}\n"
            f"  - {{configuration: xpkg.upbound.io/acme/base, version: 'sha256:{'b' * 64}'}}\n"
            "  - {configuration: xpkg.upbound.io/acme/base, version: '>=1.0.0'}\n"
            f"  - {{configuration: xpkg.upbound.io/acme/pinned, version: 'sha256:{'c' * 64}'}}\n"
            f"  - {{configuration: xpkg.upbound.io/acme/pinned, version: 'sha256:{'a' * 64}'}}\n")
    top = _package("xpkg.upbound.io/acme/top:v1.0.0", META.format(name="top", crossplane="not a constraint", deps=deps))
    report = run("", [top, base, pinned], target="1.16")
    top_ref = "xpkg.upbound.io/acme/top:v1.0.0"
    assert _messages(report, "PV-008") == [  # the digest that matches gives no finding
        f"{top_ref}: crossplane.version: improper constraint 'not a constraint' in 'not a constraint'",
        f"{top_ref}: dependency 'Not A Name!' cannot be resolved",
        f"{top_ref} depends on xpkg.upbound.io/acme/base '': no version constraint",
        f"{top_ref} depends on xpkg.upbound.io/acme/base 'sha256:{'b' * 64}': the bundle pins "
        "xpkg.upbound.io/acme/base:latest by tag, so its digest cannot be compared",
        f"{top_ref} depends on xpkg.upbound.io/acme/base '>=1.0.0': the bundled tag 'latest' is not a semantic version",
        f"{top_ref} depends on xpkg.upbound.io/acme/pinned 'sha256:{'c' * 64}': the bundle carries sha256:{'a' * 64}",
    ]


PROVIDER = """apiVersion: meta.pkg.crossplane.io/v1
kind: Provider
metadata: {name: provider-widgets}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.widgets.example.org}
spec:
  group: widgets.example.org
  names: {kind: Widget, plural: widgets}
  scope: Cluster
  versions:
  - {name: v1alpha1, served: true, storage: false}
  - name: v1beta1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          spec:
            type: object
            properties:
              size: {x-kubernetes-int-or-string: true}
              note: {type: string, nullable: true}
              a: {type: string}
              b: {type: string}
              c: {type: string}
              d: {type: string}
"""


def test_schemaless_versions_and_int_or_string_and_nullable_fields() -> None:
    widgets = _package("xpkg.upbound.io/acme/provider-widgets:v1.0.0", PROVIDER)
    good = "{apiVersion: widgets.example.org/v1beta1, kind: Widget, spec: {size: 3, note: null}}"
    also = "{apiVersion: widgets.example.org/v1beta1, kind: Widget, spec: {size: '50%'}}"
    bad = "{apiVersion: widgets.example.org/v1beta1, kind: Widget, spec: {size: [1], colour: red}}"
    old = "{apiVersion: widgets.example.org/v1alpha1, kind: Widget}"
    report = run(docs(xrd(), comp(good, also, bad, old)), [*V2_AWS, widgets])
    assert _messages(report, "PV-011") == [  # 3 and '50%' fit int-or-string, null fits the nullable note
        "Composition xbuckets: widgets.example.org/v1beta1 Widget at spec.size: [1] is not of type 'integer', 'string'",
        "Composition xbuckets: widgets.example.org/v1beta1 Widget at spec: Additional properties are not allowed "
        "('colour' was unexpected)",
        "widgets.widgets.example.org v1alpha1 carries no openAPIV3Schema; the template cannot be validated",
    ]


# --- crossplane_rules.py: XR instances, package strings, core kinds ------------------------------------------


def test_an_xr_of_a_namespaced_xrd_with_a_connection_secret_ref_warns() -> None:
    xr = ("apiVersion: example.org/v1alpha1\nkind: XBucket\nmetadata: {name: mine, namespace: team}\n"
          "spec: {writeConnectionSecretToRef: {name: creds}}")
    report = run(docs(xrd(scope="Namespaced"), comp(M_BUCKET), xr), V2_AWS)
    assert _messages(report, "XP2-004", "warn") == [
        "XBucket mine is a Namespaced XR; spec.writeConnectionSecretToRef is not supported"]


def test_provider_packages_that_are_missing_or_not_references() -> None:
    providers = ("apiVersion: pkg.crossplane.io/v1\nkind: Provider\nmetadata: {name: empty}\nspec: {}\n---\n"
                 "apiVersion: pkg.crossplane.io/v1\nkind: Provider\nmetadata: {name: odd}\n"
                 "spec: {package: 'Not A Ref!'}\n")
    messages = " | ".join(f.message for f in run(providers, V2_AWS).findings if f.rule == "XP2-005")
    assert "spec.package is missing" in messages and "'Not A Ref!' is not a valid image reference" in messages


def test_a_core_kind_the_target_does_not_have() -> None:
    report = run("apiVersion: pkg.crossplane.io/v1\nkind: Gadget\nmetadata: {name: g}\n", V2_AWS)
    assert _messages(report, "XP2-007") == ["pkg.crossplane.io/v1 Gadget is not a Crossplane 2.0.0 core API"]


def test_schema_errors_of_one_template_are_capped_at_five() -> None:
    widgets = _package("xpkg.upbound.io/acme/provider-widgets:v1.0.0", PROVIDER)
    bad = "{apiVersion: widgets.example.org/v1beta1, kind: Widget, spec: {size: [1], note: 2, a: 1, b: 2, c: 3, d: 4}}"
    report = run(docs(xrd(), comp(bad)), [*V2_AWS, widgets])
    assert len([m for m in _messages(report, "PV-011") if "v1beta1 Widget" in m]) == 5


MRAP = """apiVersion: apiextensions.crossplane.io/v1alpha1
kind: ManagedResourceActivationPolicy
metadata: {{name: default}}
spec:
  activate: [{pattern}]
"""


def test_activation_policies_concern_only_resources_of_safe_start_providers() -> None:
    widgets = _package("xpkg.upbound.io/acme/provider-widgets:v1.0.0", PROVIDER)  # no safe-start capability
    composed = comp(M_BUCKET, "{apiVersion: v1, kind: ConfigMap}", "{apiVersion: widgets.example.org/v1beta1, "
                    "kind: Widget, spec: {size: 1}}")
    none = run(docs(xrd(), composed, MRAP.format(pattern="nothing.example.org")), [*V2_AWS, widgets])
    assert _messages(none, "PV-010") == [
        "Composition xbuckets: buckets.s3.aws.m.upbound.io comes from safe-start provider "
        "xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0 and no bundled ManagedResourceActivationPolicy activates it "
        "(patterns: nothing.example.org)"]
    every = run(docs(xrd(), composed, MRAP.format(pattern="'*'")), [*V2_AWS, widgets])
    assert _messages(every, "PV-010") == []
