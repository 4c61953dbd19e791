"""sweep.py on shapes the fixtures lack: a document that is not an object, strong image strings in a
custom resource's lists, non-string words in args, a container image that is not a string, tag
queries, and the vendored-list check by digest."""

from __future__ import annotations

from bundler import sweep
from bundler.documents import Document, Origin, load_stream
from bundler.reference import ImageRef

D = "sha256:" + "d" * 64


def test_a_document_that_is_not_an_object_has_no_findings() -> None:
    [doc] = load_stream("- nginx:1.27\n", Origin("l.yaml", 1))
    assert sweep.sweep_document(doc) == []


def test_strong_image_strings_in_a_custom_resources_lists_are_candidates() -> None:
    [doc] = load_stream("apiVersion: example.org/v1\nkind: Thing\nmetadata: {name: t}\nspec:\n"
                        "  mirrors: [quay.io/org/agent:v1.2.3, plain words, 42]\n", Origin("t.yaml", 1))
    [finding] = [f for f in sweep.sweep_document(doc) if isinstance(f, sweep.Finding)]
    assert (str(finding.ref), finding.path, finding.confidence) == (
        "quay.io/org/agent:v1.2.3", ("spec", "mirrors", 0), "candidate")


def test_words_that_are_not_strings_and_an_image_that_is_not_one() -> None:
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "a", "image": 7, "args": [1, "--image=quay.io/org/x:1"]}]}}
    found = sweep.sweep_document(Document(obj, Origin("p.yaml", 1)))
    [invalid] = [f for f in found if isinstance(f, sweep.Invalid)]
    assert (invalid.written, invalid.error) == ("7", "invalid reference 7: not a string")
    assert [str(f.ref) for f in found if isinstance(f, sweep.Finding)] == ["quay.io/org/x:1"]


def test_matches_and_the_vendored_list_by_tag_and_digest() -> None:
    ref = ImageRef.parse(f"quay.io/org/app:1@{D}")
    assert sweep.matches(ImageRef.parse("quay.io/org/app"), ref)
    assert not sweep.matches(ImageRef.parse("quay.io/org/app:2"), ref)

    def image(text: str) -> sweep.Image:
        return sweep.Image(ImageRef.parse(text), text, "definite", False, False, ())

    by_digest = sweep.in_list([ImageRef.parse(f"quay.io/org/app@{D}")])
    assert by_digest(image(f"quay.io/org/app:1@{D}"))
    assert not by_digest(image("quay.io/org/app:1"))
    by_tag = sweep.in_list([ImageRef.parse("quay.io/org/app:1")])
    assert by_tag(image(f"quay.io/org/app:1@{D}")) and not by_tag(image("quay.io/org/other:1"))


def test_an_unknown_split_shape_that_joins_to_no_reference_is_not_a_candidate() -> None:
    obj = {"apiVersion": "example.org/v1", "kind": "Thing", "metadata": {"name": "t"},
           "spec": {"agentImage": {"repository": "Not A Repo!", "tag": "1.0"},  # a common shape, no reference
                    "helperImage": {"path": "Not A Path!", "imageTag": "1.0"},  # an unknown shape, no reference
                    "sidecarImage": {"repository": "quay.io/org/sidecar", "tag": "2.0"}}}
    found = [f for f in sweep.sweep_document(Document(obj, Origin("t.yaml", 1))) if isinstance(f, sweep.Finding)]
    assert [(str(f.ref), f.path) for f in found] == [("quay.io/org/sidecar:2.0", ("spec", "sidecarImage"))]
