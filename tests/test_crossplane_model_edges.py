"""Reading composed kinds out of a Composition statically (crossplane_model.extract_templates): steps
that are not mappings, functions unknown to compose nothing, P&T resources without a base, and inline
go-templates that are not inline, are empty, or lack a literal apiVersion or kind, each as an opaque
step with its reason."""

from __future__ import annotations

import pytest

from bundler.crossplane_model import GVK, Waiver, extract_templates
from bundler.documents import Origin, load_stream
from bundler.errors import UsageError
from tests.support.crossplane import pkg

FUNCTIONS = {"auto-ready": pkg("function-auto-ready-v0.5.0"), "kcl": pkg("function-kcl-v0.11.0")}


def _composition(pipeline: str) -> object:
    text = ("apiVersion: apiextensions.crossplane.io/v1\nkind: Composition\nmetadata: {name: c}\nspec:\n"
            "  compositeTypeRef: {apiVersion: example.org/v1, kind: XApp}\n  mode: Pipeline\n  pipeline:\n"
            + pipeline)
    [doc] = load_stream(text, Origin("c.yaml", 1))
    return extract_templates(doc, FUNCTIONS)


def _gt(template: str, source: str = "Inline") -> str:
    body = "\n".join("          " + line for line in template.splitlines())
    return ("  - step: gt\n    functionRef: {name: gt}\n    input:\n"
            "      apiVersion: gotemplating.fn.crossplane.io/v1beta1\n      kind: GoTemplate\n"
            f"      source: {source}\n      inline:\n        template: |\n{body}\n")


def test_steps_that_compose_nothing_or_cannot_be_read() -> None:
    comp = _composition(
        "  - just a string\n"
        "  - {step: ready, functionRef: {name: auto-ready}}\n"
        "  - {step: mystery, functionRef: {name: unknown-fn}}\n"
        "  - step: pt\n    functionRef: {name: pt}\n    input:\n"
        "      apiVersion: pt.fn.crossplane.io/v1beta1\n      kind: Resources\n"
        "      resources: [{name: nobase}, {name: b, base: {apiVersion: s3.aws.upbound.io/v1beta1, kind: Bucket}}]\n"
        "  - step: quiet\n    functionRef: {name: auto-ready}\n    input: {apiVersion: other.io/v1, kind: X}\n")
    assert [t.gvk for t in comp.templates] == [GVK("s3.aws.upbound.io/v1beta1", "Bucket")]  # type: ignore[attr-defined]
    assert [(o.step, o.reason) for o in comp.opaque] == [  # type: ignore[attr-defined]
        ("mystery", "a step without input whose function is not known to compose nothing")]


@pytest.mark.parametrize(("pipeline", "reason"), [
    (_gt("", source="FileSystem"), "go-templating source 'FileSystem' is not inline"),
    ("  - step: gt\n    functionRef: {name: gt}\n    input:\n      apiVersion: gotemplating.fn.crossplane.io/v1beta1\n"
     "      kind: GoTemplate\n      source: Inline\n      inline: {}\n", "go-templating input has no inline.template"),
    (_gt("metadata:\n  name: x\n"), "an inline template document has no literal apiVersion/kind"),
    (_gt("apiVersion: s3.aws.upbound.io/v1beta1\nmetadata: {name: x}\n"),
     "an inline template document lacks apiVersion or kind"),
])
def test_inline_templates_that_cannot_be_read(pipeline: str, reason: str) -> None:
    comp = _composition(pipeline)
    assert [o.reason for o in comp.opaque] == [reason]  # type: ignore[attr-defined]


def test_comment_and_directive_only_documents_are_skipped() -> None:
    comp = _composition(_gt("# a comment\n{{ $x := 1 }}\n---\napiVersion: s3.aws.upbound.io/v1beta1\nkind: Bucket\n"))
    assert [t.gvk.kind for t in comp.templates] == ["Bucket"] and comp.opaque == ()  # type: ignore[attr-defined]


def test_a_waiver_needs_a_composition() -> None:
    with pytest.raises(UsageError, match="a Crossplane waiver needs `composition`"):
        Waiver("", None, (GVK("v1", "ConfigMap"),), "reviewed")
