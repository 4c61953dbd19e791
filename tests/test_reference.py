"""The distribution/reference grammar, case by case, plus round-trip properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundler.errors import InvalidReferenceError
from bundler.reference import ImageRef

H64 = "a" * 64
D = f"sha256:{H64}"

# input -> (domain, path, tag, digest); written from distribution/reference's grammar and normalize.go.
VALID = {
    "nginx": ("docker.io", "library/nginx", None, None),
    "nginx:1.27": ("docker.io", "library/nginx", "1.27", None),
    "nginx:latest": ("docker.io", "library/nginx", "latest", None),
    "library/nginx": ("docker.io", "library/nginx", None, None),
    "docker.io/nginx": ("docker.io", "library/nginx", None, None),
    "docker.io/library/nginx:1": ("docker.io", "library/nginx", "1", None),
    "index.docker.io/nginx": ("docker.io", "library/nginx", None, None),
    "index.docker.io/user/app:v2": ("docker.io", "user/app", "v2", None),
    "bitnami/redis:7.2": ("docker.io", "bitnami/redis", "7.2", None),
    "a/b/c/d": ("docker.io", "a/b/c/d", None, None),
    "quay.io/prometheus/node-exporter:v1.8.2": ("quay.io", "prometheus/node-exporter", "v1.8.2", None),
    "registry.k8s.io/pause:3.9": ("registry.k8s.io", "pause", "3.9", None),
    "localhost/app": ("localhost", "app", None, None),
    "localhost:5000/app:dev": ("localhost:5000", "app", "dev", None),
    "127.0.0.1:5000/team/app": ("127.0.0.1:5000", "team/app", None, None),
    "[::1]:5000/app:1": ("[::1]:5000", "app", "1", None),
    "[2001:db8::1]/app": ("[2001:db8::1]", "app", None, None),
    "my-registry.example.com:443/a/b": ("my-registry.example.com:443", "a/b", None, None),
    "Registry.Example.com/app": ("Registry.Example.com", "app", None, None),
    "UPPER/app": ("UPPER", "app", None, None),  # an upper-case first component is a host
    f"nginx@{D}": ("docker.io", "library/nginx", None, D),
    f"nginx:1.27@{D}": ("docker.io", "library/nginx", "1.27", D),
    f"ghcr.io/o/r:t@{D}": ("ghcr.io", "o/r", "t", D),
    f"app@sha512:{'b' * 128}": ("docker.io", "library/app", None, f"sha512:{'b' * 128}"),
    f"app@sha384:{'c' * 96}": ("docker.io", "library/app", None, f"sha384:{'c' * 96}"),
    "a_b/c__d/e-f/g.h/i---j:T_a.g-1": ("docker.io", "a_b/c__d/e-f/g.h/i---j", "T_a.g-1", None),
    "x:" + "t" * 128: ("docker.io", "library/x", "t" * 128, None),
    "foo:_tag": ("docker.io", "library/foo", "_tag", None),
    "0/1:2": ("docker.io", "0/1", "2", None),
    "1001:1001": ("docker.io", "library/1001", "1001", None),  # valid grammar; the sweep's context decides
    "db:3306/readyz": ("db:3306", "readyz", None, None),
    "a" * 63: ("docker.io", "library/" + "a" * 63, None, None),
    "example.com/" + "a" * (255 - len("example.com/")): ("example.com", "a" * 243, None, None),
    # The 255 limit is on the path alone (distribution/reference v0.6): a long host does not count.
    "registry.example.org:5000/" + "a" * 255: ("registry.example.org:5000", "a" * 255, None, None),
}

INVALID = [
    "",
    " nginx",
    "nginx ",
    "Nginx",
    "docker.io/Library/nginx",
    "quay.io/Prom/x",
    "nginx:",
    "nginx@",
    ":tag",
    "@" + D,
    "nginx:-tag",
    "nginx:.tag",
    "nginx:" + "t" * 129,
    "nginx:t@sha256:abc",
    f"nginx@sha256:{'A' * 64}",
    f"nginx@sha256:{'a' * 63}",
    f"nginx@sha256:{'a' * 65}",
    f"nginx@md5:{'a' * 32}",
    f"nginx@sha512:{'a' * 64}",
    "a" * 64,  # a 64-hex identifier is refused as a name
    "a//b",
    "a/b/",
    "/a",
    "a..b",
    "a__-b",
    "-a",
    "a-",
    "a/_b",
    "host:port:5000/a",
    "host:/a",
    "[::1/a",
    "example.com/" + "a" * 256,  # path over 255 characters
    "ex ample/a",
    "a/b:tag:tag",
    "café/app",
    "0.0_0/0",  # looks like a host (has a dot) but is not a valid one
    "app:tág",
]


@pytest.mark.parametrize(("text", "expected"), sorted(VALID.items()))
def test_valid_references(text: str, expected: tuple[str, str, str | None, str | None]) -> None:
    ref = ImageRef.parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == expected


@pytest.mark.parametrize("text", INVALID)
def test_invalid_references(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        ImageRef.parse(text)
    assert ImageRef.try_parse(text) is None


def test_canonical_adds_latest_only_without_tag_or_digest() -> None:
    assert ImageRef.parse("nginx").canonical == "docker.io/library/nginx:latest"
    assert ImageRef.parse("nginx:1").canonical == "docker.io/library/nginx:1"
    assert ImageRef.parse(f"nginx@{D}").canonical == f"docker.io/library/nginx@{D}"
    # name:tag@digest: a runtime pulls by the digest alone, so the canonical form drops the tag.
    assert ImageRef.parse(f"nginx:1.27@{D}").canonical == f"docker.io/library/nginx@{D}"


@pytest.mark.parametrize(("text", "familiar"), [
    ("docker.io/library/nginx:1", "nginx:1"),
    ("docker.io/user/app", "user/app"),
    ("docker.io/library/a/b", "library/a/b"),
    ("quay.io/a/b:c", "quay.io/a/b:c"),
])
def test_familiar_string(text: str, familiar: str) -> None:
    assert ImageRef.parse(text).familiar == familiar


def test_errors_say_why() -> None:
    with pytest.raises(InvalidReferenceError, match="must be lowercase"):
        ImageRef.parse("quay.io/Prom/x")
    with pytest.raises(InvalidReferenceError, match="64-byte hexadecimal"):
        ImageRef.parse("a" * 64)
    with pytest.raises(InvalidReferenceError, match="255 characters"):
        ImageRef.parse("example.com/" + "a" * 256)
    with pytest.raises(InvalidReferenceError, match="255 characters"):
        ImageRef.parse("a/" + "b" * 254)  # path of 256
    with pytest.raises(InvalidReferenceError, match="255 characters"):
        ImageRef.parse("x" * 250)  # normalised to library/xxx...: the path counts library/

    with pytest.raises(InvalidReferenceError, match="unsupported digest algorithm"):
        ImageRef.parse(f"nginx@md5:{'a' * 32}")


# --- properties ----------------------------------------------------------------------------------

_alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_sep = st.sampled_from([".", "_", "__", "-", "--"])
_component = st.builds(lambda a, rest: a + "".join(s + b for s, b in rest), _alnum,
                       st.lists(st.tuples(_sep, _alnum), max_size=2))
_path = st.lists(_component, min_size=1, max_size=4).map("/".join)
_domain = st.one_of(
    st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True), min_size=2, max_size=3)
    .map(".".join),
    st.just("localhost"),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["localhost", "127.0.0.1", "reg.example.com", "[::1]"]),
              st.integers(1, 65535)),
)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_digest = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: f"sha256:{b.hex()}"),
    st.binary(min_size=64, max_size=64).map(lambda b: f"sha512:{b.hex()}"),
)


@st.composite
def references(draw: st.DrawFn) -> str:
    text = draw(_path)
    if draw(st.booleans()):
        text = draw(_domain) + "/" + text
    elif "." in text.split("/")[0] and "/" in text:
        text = "localhost/" + text  # a bare first component with a dot would be read as a host
    if draw(st.booleans()):
        text += ":" + draw(_tag)
    if draw(st.booleans()):
        text += "@" + draw(_digest)
    return text


@settings(max_examples=400, deadline=None)  # no per-example deadline: CI shares 2 cores
@given(references())
def test_parse_of_str_round_trips(text: str) -> None:
    ref = ImageRef.parse(text)
    assert ImageRef.parse(str(ref)) == ref
    assert ImageRef.parse(ref.familiar) == ref
    canonical = ImageRef.parse(ref.canonical)
    if ref.digest is None:
        assert canonical.with_default_tag() == ref.with_default_tag()
    else:  # what a runtime pulls: the name and the digest, never the tag
        assert (canonical.name, canonical.tag, canonical.digest) == (ref.name, None, ref.digest)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes(text: str) -> None:
    ref = ImageRef.try_parse(text)
    if ref is not None:
        assert ImageRef.parse(str(ref)) == ref


def test_ref_command_json(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("ref", "--json", "nginx", "quay.io/a/b:1")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[0] == {"input": "nginx", "valid": True, "normalized": "docker.io/library/nginx",
                       "canonical": "docker.io/library/nginx:latest", "domain": "docker.io",
                       "path": "library/nginx", "tag": None, "digest": None}
    assert rows[1]["canonical"] == "quay.io/a/b:1"


def test_ref_command_exit_1_on_invalid(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("ref", "--json", "nginx", "Bad/Name")
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[1]["valid"] is False and "lowercase" in rows[1]["error"]
    assert "Traceback" not in result.stderr
