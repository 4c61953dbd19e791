"""The image-reference grammar of the container ecosystem: one parser for the whole tool.

Implements distribution/reference (github.com/distribution/reference, `regexp.go`, `normalize.go`,
`reference.go`) and go-digest validation exactly:

    reference        := name [ ":" tag ] [ "@" digest ]
    name             := [domain '/'] remote-name
    domain           := host [':' port-number]
    host             := domain-name | '[' IPv6address ']'
    remote-name      := path-component ['/' path-component]*
    path-component   := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
    tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest           := algorithm ":" hex   (sha256: 64, sha384: 96, sha512: 128 lowercase hex)

`ImageRef.parse` is `ParseNormalizedNamed`: a first component is a registry host only if it contains
`.` or `:`, is `localhost`, or has an upper-case letter; otherwise the host is `docker.io` and a
single-component path gets `library/`. `index.docker.io` becomes `docker.io`. The name (host and
path) may be at most 255 characters; the limit applies to the path alone, not the domain
(distribution/reference v0.6). Nothing else is guessed; callers report the normalisation.

Pure code: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidReferenceError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
NAME_TOTAL_LENGTH_MAX = 255

# distribution/reference regexp.go, transcribed (ASCII classes, as in Go's RE2).
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_REMOTE_NAME = rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_REMOTE_NAME}"

REFERENCE_RE = re.compile(rf"^({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?$", re.ASCII)
_ANCHORED_NAME_RE = re.compile(rf"^(?:({_DOMAIN})/)?({_REMOTE_NAME})$", re.ASCII)
_ANCHORED_IDENTIFIER_RE = re.compile(r"^[a-f0-9]{64}$")
TAG_RE = re.compile(rf"^{_TAG}$", re.ASCII)
REPOSITORY_PATH_RE = re.compile(rf"^{_REMOTE_NAME}$", re.ASCII)  # a path with no domain (a mirror's prefix)

# go-digest: the algorithms a Go runtime registers, and their hex lengths.
DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_FORMAT_RE = re.compile(rf"^{_DIGEST}$", re.ASCII)


def validate_digest(value: str) -> str:
    """Check a digest string the way go-digest `Digest.Validate` does; return it unchanged.

    Raises:
        InvalidReferenceError: malformed, unsupported algorithm, or wrong length / non-lowercase hex.
    """
    algorithm, sep, encoded = value.partition(":")
    if not sep or not algorithm or not encoded:
        raise InvalidReferenceError(f"invalid digest {value!r}: expected ALGORITHM:HEX")
    length = DIGEST_HEX_LENGTH.get(algorithm)
    if length is None:
        if not _DIGEST_FORMAT_RE.match(value):
            raise InvalidReferenceError(f"invalid digest {value!r}: malformed")
        raise InvalidReferenceError(f"unsupported digest algorithm {algorithm!r} in {value!r}")
    if len(encoded) != length or not re.fullmatch(r"[a-f0-9]+", encoded):
        raise InvalidReferenceError(
            f"invalid digest {value!r}: {algorithm} needs {length} lowercase hex characters"
        )
    return value


def split_docker_domain(name: str) -> tuple[str, str]:
    """distribution/reference `splitDockerDomain`: (domain, remainder) with docker.io defaults."""
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, rest
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def looks_like_host(component: str) -> bool:
    """True when a first path component would be taken as a registry host (not docker.io)."""
    return any(c in component for c in ".:") or component == "localhost" or component.lower() != component


@dataclass(frozen=True, order=True)
class ImageRef:
    """A normalised image reference. `str()` is the full normalised form distribution prints."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Parse like `reference.ParseNormalizedNamed` (docker pull, containerd, kubelet).

        Raises:
            InvalidReferenceError: the text is not a valid reference; the message says why.
        """
        if not isinstance(text, str):
            raise InvalidReferenceError(f"invalid reference {text!r}: not a string")
        if _ANCHORED_IDENTIFIER_RE.match(text):
            raise InvalidReferenceError(
                f"invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
            )
        domain, remainder = split_docker_domain(text)
        remote_name = remainder.split(":", 1)[0]  # as normalize.go: up to the first ':'
        if remote_name.lower() != remote_name:
            raise InvalidReferenceError(
                f"invalid reference format: repository name ({remote_name}) must be lowercase"
            )
        return cls._parse_full(f"{domain}/{remainder}", original=text)

    @classmethod
    def _parse_full(cls, text: str, *, original: str) -> ImageRef:
        """distribution/reference `Parse` on an already-qualified string."""
        match = REFERENCE_RE.match(text)
        if match is None:
            if not original:
                raise InvalidReferenceError("invalid reference format: repository name must have at least one component")
            if REFERENCE_RE.match(text.lower()):  # pragma: no cover - parse() refused an upper-case path first
                raise InvalidReferenceError(
                    f"invalid reference format: {original!r}: repository name must be lowercase"
                )
            raise InvalidReferenceError(f"invalid reference format: {original!r}")
        name, tag, digest = match.group(1), match.group(2), match.group(3)
        name_match = _ANCHORED_NAME_RE.match(name)
        if name_match is None or not name_match.group(1):
            # Go's Parse would accept "a_b.c/d" with an empty domain, which no runtime can pull;
            # we refuse it rather than guess a registry.
            raise InvalidReferenceError(
                f"invalid reference {original!r}: {name.split('/')[0]!r} is not a valid registry host"
            )
        if len(name_match.group(2)) > NAME_TOTAL_LENGTH_MAX:
            # The path alone, not the domain (distribution/reference since v0.6, PR #9).
            raise InvalidReferenceError(
                f"invalid reference {original!r}: repository name must not be more than "
                f"{NAME_TOTAL_LENGTH_MAX} characters"
            )
        if digest is not None:
            validate_digest(digest)
        return cls(domain=name_match.group(1), path=name_match.group(2), tag=tag, digest=digest)

    @classmethod
    def try_parse(cls, text: str) -> ImageRef | None:
        """`parse`, or None when the text is not a valid reference."""
        try:
            return cls.parse(text)
        except InvalidReferenceError:
            return None

    @property
    def name(self) -> str:
        """Registry host and repository path: `docker.io/library/nginx`."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The repository path on its registry (an alias of `path`, as the distribution API calls it)."""
        return self.path

    @property
    def familiar(self) -> str:
        """The short form docker prints (`nginx:1.27`), as reference.FamiliarString."""
        path = self.path
        if self.domain == DEFAULT_DOMAIN:
            if path.startswith(OFFICIAL_REPO_PREFIX) and "/" not in path[len(OFFICIAL_REPO_PREFIX):]:
                path = path[len(OFFICIAL_REPO_PREFIX):]
            name = path
        else:
            name = f"{self.domain}/{path}"
        return name + self._suffix()

    @property
    def is_name_only(self) -> bool:
        return self.tag is None and self.digest is None

    @property
    def canonical(self) -> str:
        """What a runtime pulls: the normalised name plus `:latest` when neither tag nor digest is set,
        and `name@digest` when both are (a runtime ignores the tag of `name:tag@digest`)."""
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return str(self.with_default_tag())

    def with_default_tag(self) -> ImageRef:
        """reference.TagNameOnly: add `latest` when there is neither tag nor digest."""
        return ImageRef(self.domain, self.path, "latest", None) if self.is_name_only else self

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.domain, self.path, self.tag, validate_digest(digest))

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag is not None else "") + (
            f"@{self.digest}" if self.digest is not None else ""
        )

    def __str__(self) -> str:
        return self.name + self._suffix()
