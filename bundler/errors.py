"""The error tree and the exit codes of airgap-bundle.

Every error the library raises on purpose is a `BundlerError`: it names the object at fault
(a file and line, an image reference, an authority) and carries a `hint` that says what to do next.
Only `cli.py` prints them: one line, then `sys.exit(error.exit_code)`. The codes are documented in
the README ("Exit codes"); a test keeps the two in step.

This module does no I/O.
"""

from __future__ import annotations

import errno


class BundlerError(Exception):
    """Base class: a problem the user can act on. `str()` is the one line the CLI prints."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# 1: a check ran and found problems (unvendored images, invalid references, Crossplane verdict "fail").
class CheckFailedError(BundlerError):
    exit_code = 1


class UnvendoredImageError(CheckFailedError):
    """An image the deployment pulls is not carried by the bundle."""


# 13-14: the relocation closed loop (a delivery path that would still reach outside the local registry).
class UnrelocatedImageError(CheckFailedError):
    """A delivery path (rewritten manifests, chart + values override, Kustomize overlay) still names an
    image outside the local registry, or a chart hard-codes an image the spec does not accept."""

    exit_code = 13


class OverrideSideEffectError(CheckFailedError):
    """A chart's values override would change something other than image references."""

    exit_code = 14


# 2: bad input or usage.
class UsageError(BundlerError):
    exit_code = 2


class SpecError(UsageError):
    """The bundle spec, a values file or a manifest is malformed. The message starts with file:line."""


class InputError(UsageError):
    """An input file cannot be read or parsed (missing, not UTF-8, malformed YAML, too large)."""


class InvalidReferenceError(UsageError):
    """An image reference does not follow the distribution/reference grammar."""


# 3: helm or kustomize failed on the given sources.
class RenderError(BundlerError):
    exit_code = 3


# 15: an external tool the command needs (helm, kubectl) is missing or cannot be run.
class ToolMissingError(BundlerError):
    exit_code = 15


# 4-9: talking to registries and pulling images.
class RegistryError(BundlerError):
    """A registry could not be reached or refused the request (network, TLS, 5xx after retries)."""

    exit_code = 4


class AuthError(RegistryError):
    exit_code = 5


class NotFoundError(RegistryError):
    exit_code = 6


class RateLimitedError(RegistryError):
    exit_code = 4


class DigestMismatchError(RegistryError):
    """Bytes received do not hash to the digest they were asked for."""

    exit_code = 7


class PlatformMissingError(BundlerError):
    """A required platform is missing from an image and the spec grants no exemption."""

    exit_code = 8


class OfflineMissError(BundlerError):
    """--offline was asked and the cache lacks content the build needs."""

    exit_code = 9


# 10: the Crossplane gate failed closed (inside a build; `crossplane check` itself exits 1).
class CrossplaneError(BundlerError):
    exit_code = 10


# 11: writing or reading the bundle archive.
class ArchiveError(BundlerError):
    exit_code = 11


class UnsafeArchiveError(ArchiveError):
    """Links, devices, absolute paths, `..` or duplicate names in the tar."""

    exit_code = 12


# 11 too: out of file descriptors, the environment's fault and not the input's, in any command.
_OPEN_FILE_HINTS = {
    errno.EMFILE: "raise the open-file limit with ulimit -n, then run again",  # this process's limit
    errno.ENFILE: "the system's open-file table is full: close other programs or raise fs.file-max, then run again",
}


def open_file_limit_hint(error: OSError) -> str | None:
    """What to do about `error` when it is EMFILE or ENFILE (too many open files), else None."""
    return _OPEN_FILE_HINTS.get(error.errno) if error.errno is not None else None


class TooManyOpenFilesError(BundlerError):
    """A file could not be opened for want of file descriptors (EMFILE: the process's `ulimit -n`;
    ENFILE: the system's). It can strike any open, a module Python imports late included, so the CLI
    makes it from whatever was raised (`from_error`) instead of every opener wrapping it."""

    exit_code = 11

    @classmethod
    def from_error(cls, error: BaseException) -> TooManyOpenFilesError | None:
        """The error to report when `error` is, or was raised from, an EMFILE or ENFILE OSError: a
        BundlerError's own message, else the file the OSError names; with the hint that fits. None for
        any other error. "Raised from" is `raise ... from E`, or `raise ... from None` while handling E
        (a translation that drops E's traceback, as the registry client does), never an error merely
        raised while another was being handled."""
        cause: BaseException | None = error
        while cause is not None and not (isinstance(cause, OSError) and open_file_limit_hint(cause)):
            cause = cause.__cause__ or (cause.__context__ if cause.__suppress_context__ else None)
        if not isinstance(cause, OSError):
            return None
        if isinstance(error, BundlerError):
            message = error.message
        elif cause.filename is not None:
            message = f"{cause.filename}: cannot open: {cause.strerror}"
        else:
            message = f"cannot open a file: {cause.strerror}"
        return cls(message, hint=open_file_limit_hint(cause))


# 16: bundle.lock (what a build pinned) and the spec or the registry disagree.
class LockError(BundlerError):
    exit_code = 16


class LockMismatchError(LockError):
    """The spec and its lock disagree: an image or chart added or removed, other platforms, a local
    chart that changed, or a narrowed index that no longer narrows to the locked digest."""


class LockedDigestGoneError(LockError):
    """A digest the lock pins is served by no configured registry (and is not in the cache)."""


# 17: Helm chart provenance.
class ProvenanceError(BundlerError):
    """A chart's provenance (.prov) is required but missing, or does not verify against the spec's keyring."""

    exit_code = 17


# 20-29: verification. Each rejection has its own code so scripts can tell them apart.
class VerificationError(BundlerError):
    exit_code = 20


class UnsignedBundleError(VerificationError):
    exit_code = 21


class MissingAuthorityError(VerificationError):
    exit_code = 22


class ExpiredKeyError(VerificationError):
    exit_code = 23


class BadSignatureError(VerificationError):
    exit_code = 24


class UntrustedKeyError(VerificationError):
    """A key or certificate that no configured trust anchor vouches for."""

    exit_code = 25


class UnlistedMemberError(VerificationError):
    """A member added, removed, renamed, listed twice, or whose size or digest disagrees."""

    exit_code = 26


class NoTrustAnchorError(VerificationError):
    """The policy configures no vendor trust anchor: refuse rather than skip verification."""

    exit_code = 27


class NotYetValidError(ExpiredKeyError):
    """A signing certificate (or its root) whose notBefore is in the future: check the clock.

    Same exit code as an expired key (outside its validity window); its own message and hint.
    """


class BaseRequiredError(VerificationError):
    """An update bundle given without its base, or with another base than the one its statement names."""

    exit_code = 28


class StatementMismatchError(VerificationError):
    """The statement is malformed, or its subjects or predicate disagree with the members."""

    exit_code = 29


# 31: a split bundle's parts (bundler/parts.py) do not match their signed index.
class PartError(VerificationError):
    """A part of a split bundle is missing, has another size than its signed index says, or its sha256
    differs; or the signed index itself is malformed (parts out of order, sizes that do not add up)."""

    exit_code = 31


# 30: push readback.
class ReadbackError(BundlerError):
    """After a push, the target registry does not serve what was pushed (a manifest, a platform, a
    blob, or an image a rewritten manifest names)."""

    exit_code = 30
