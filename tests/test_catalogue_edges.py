"""catalogue's small pieces on their edges: formats and paths refused with a reason, composition with
missing fields, the path walker over odd shapes, and catalogue files that are not YAML mappings."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from bundler import catalogue
from bundler.errors import SpecError

ENTRY = "id: x\noperator: X\nsources:\n  - {url: 'https://x.example', versions: '1'}\n"


@pytest.mark.parametrize(("text", "message"), [
    ("{repository}/{image}", "must end with :{tag-field} or @{digest-field}"),
    ("{repository}x/{image}:{tag}", "a / component is either one {field} or a literal"),
    ("//{image}:{tag}", "a / component is either one {field} or a literal"),
])
def test_formats_that_are_not_name_and_slot(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        catalogue.Format.parse(text)


def test_a_format_with_an_odd_component_in_a_catalogue_file_names_the_line() -> None:
    text = ENTRY + "splits:\n  - {group: x.io, kind: X, path: spec, format: '{a}x/{b}:{c}'}\n"
    with pytest.raises(SpecError, match=r"^bundler/catalogue/x.yaml:6: splits\[0\].format: format '\{a\}x/\{b\}:\{c\}'"):
        catalogue.load_text(text, "bundler/catalogue/x.yaml")


def test_compose_and_decompose_need_every_field() -> None:
    fmt = catalogue.Format.parse("{registry}/{repository}:{tag}")
    assert fmt.compose({"registry": "ghcr.io", "repository": "org/app", "tag": ""}) is None
    assert fmt.decompose("reg.local/ghcr.io/org/app", {"registry": "ghcr.io", "repository": ""}) is None
    rule = catalogue.SplitRule(catalogue.Selector("x.io", "X"), "spec.image", catalogue.parse_path("spec.image"), fmt)
    assert catalogue.compose(rule, "ghcr.io/org/app:1", "rule") is None  # a string where the object should be
    comp = catalogue.compose(rule, {"registry": "ghcr.io", "repository": "org/app", "tag": "1"}, "rule")
    assert comp is not None and comp.written() == "ghcr.io/org/app:1"


def test_path_parsing_and_walking_odd_shapes() -> None:
    with pytest.raises(ValueError, match="path 'spec..image' has an empty component"):
        catalogue.parse_path("spec..image")
    steps = catalogue.parse_path("spec.*.images[].ref")
    obj = {"spec": {"a": {"images": [{"ref": "x"}, {"other": 1}]}, "b": {"images": "not a list"}, 3: {"images": []},
                    "c": ["not", "a", "mapping"]}}
    assert list(catalogue.resolve(obj, steps)) == [(("spec", "a", "images", 0, "ref"), "x")]
    assert list(catalogue.resolve({"spec": ["x"]}, steps)) == []  # `*` over a list: nothing


def test_catalogue_files_that_are_not_entries() -> None:
    with pytest.raises(SpecError, match="^bundler/catalogue/x.yaml:2: malformed YAML"):
        catalogue.load_text("id: x\n  operator: [\n", "bundler/catalogue/x.yaml")
    with pytest.raises(SpecError, match="^bundler/catalogue/x.yaml:1: a catalogue entry must be a mapping"):
        catalogue.load_text("- id: x\n", "bundler/catalogue/x.yaml")


def test_line_in_stops_at_the_deepest_known_node() -> None:
    data = YAML(typ="rt").load("a:\n  b:\n  - 1\n  - 2\n")
    assert catalogue.line_in(data, ["a", "b", 1]) == 4
    assert catalogue.line_in(data, ["a", "b", 7, "x"]) == 2  # the index is not there: the list's own line
    assert catalogue.line_in(data, ["a", "missing"]) == 1
