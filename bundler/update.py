"""Update bundles: a bundle that carries only the image blobs its base bundle lacks.

An update names its base, a full bundle, by the sha256 of the base's `bundle.intoto.json` bytes, and
lists in `predicate.base.files` the image blobs a full bundle would carry that it takes from the base
instead (docs/bundle-format.md section 7). Everything else (statement, SBOM, provenance, manifests,
charts, `images/index.json`, `images/oci-layout`, new blobs) it carries, so update + base is exactly
what a full build of the same spec holds.

- build: `load_base(path, trust, now) -> Base` verifies the base fully, with verify's own steps and
  exit codes, before anything is taken from it; `split(files, base)` (pure) says which payload files
  the update carries and which it takes from the base.
- use: `open_pair(update, base, trust, now)` verifies the update (signatures, then its own members),
  checks that the base is the one it names (statement digest) before hashing it, verifies the base
  fully, then checks that the base holds every file the update takes from it with that size and
  sha256; `verify_pair_and_extract` extracts the union from the two files it checked (hashing again,
  staging folder + rename); `push` reads blobs from whichever of the two holds them.

Offline like verify: nothing here opens a connection. Does not build, sign or push (pipeline, sign,
push do), and does not define what a valid bundle is (verify does).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import archive, parts, verify
from .bom import BaseEntry, FileEntry
from .bundlefile import BundleBytes, opened
from .errors import BaseRequiredError, StatementMismatchError, UsageError
from .keys import TrustPolicy

Files = Mapping[str, tuple[int, str]]  # member path -> (size, sha256 hex)


@dataclass(frozen=True)
class Base:
    """A verified full bundle an update is built against: how to name it and what it holds."""

    path: Path
    statement_digest: str  # sha256:<hex> of its bundle.intoto.json bytes
    name: str
    version: str
    files: Files = field(repr=False)  # every payload member, as verified

    def holds_blob(self, digest: str, size: int) -> bool:
        """The base carries this image blob (same sha256 and size): an update takes it from there."""
        hexd = digest.removeprefix("sha256:")
        return self.files.get(verify.BLOBS_DIR + hexd) == (size, hexd)

    def entry(self, taken: Sequence[FileEntry]) -> BaseEntry:
        """The statement's `predicate.base` for an update that takes `taken` from this base."""
        return BaseEntry(self.statement_digest, self.name, self.version, tuple(taken))


def load_base(path: Path | str, trust: TrustPolicy, *, now: dt.datetime) -> Base:
    """Verify `path` fully (signatures against `trust`, then every member's sha256) and describe it.
    `path` may be a split bundle's parts index: its signature and parts are checked first, as verify does.

    Raises:
        the verify failures with verify's exit codes (20-29, 11-12); an update as a base is refused
        (exit 28: it lacks blobs of its own base); InputError: the file cannot be opened; a split base
        (its parts index, NAME.parts.json) the failures of `parts.open_bundle`.
    """
    with parts.open_bundle(path, trust, now) as source:
        result = verify.require(verify.verify(source, trust, now=now))
    assert result.bom is not None and result.statement_sha256 is not None  # an accepted result carries both
    return Base(Path(path), "sha256:" + result.statement_sha256, result.bom.name, result.bom.version,
                _payload(result))


def split(files: Sequence[FileEntry], base: Base) -> tuple[tuple[FileEntry, ...], tuple[FileEntry, ...]]:
    """(carried, taken): an image blob the base holds with the same size and sha256 is taken from the
    base; every other payload file is carried."""
    taken = tuple(f for f in files if f.path == verify.BLOBS_DIR + f.sha256 and base.holds_blob(f.sha256, f.size))
    carried = tuple(f for f in files if f not in taken)
    return carried, taken


@dataclass(frozen=True)
class Pair:
    """An update and its base, both verified, held open: what is read next is what was checked."""

    update_file: BundleBytes
    base_file: BundleBytes
    update: verify.VerificationResult
    base: verify.VerificationResult
    taken: Files  # what the update takes from the base, each checked against the base's verified members
    update_where: str = ""  # the paths, for messages
    base_where: str = ""


@contextmanager
def open_pair(update: Path | str | BundleBytes, base: Path | str | BundleBytes, trust: TrustPolicy, *,
              now: dt.datetime) -> Iterator[Pair]:
    """Open and verify an update bundle and its base (see the module docstring for the order).

    Raises:
        the update's or the base's verify failures (their own exit codes); BaseRequiredError (28): the
        base is not the one the update names; StatementMismatchError (29): the base lacks a file the
        update takes from it; UsageError: UPDATE is a full bundle; InputError: a file cannot be opened.
    """
    with ExitStack() as stack:
        (fu, wu), (fb, wb) = (stack.enter_context(opened(p)) for p in (update, base))
        checked = verify.require(verify.verify_file(fu, wu, trust, now=now, allow_update=True))
        assert checked.bom is not None  # an accepted result carries its predicate
        named = checked.bom.base
        if named is None:
            raise UsageError(f"{wu} is a full bundle, not an update: it needs no base",
                             hint="drop --base")
        # the cheap check first: a wrong base is refused before its members are hashed
        statement = "sha256:" + hashlib.sha256(verify.scan(fb, wb)[1]).hexdigest()
        if statement != named.statement_digest:
            raise BaseRequiredError(f"{wb} is not the base of {wu}: its statement is {statement}, the update "
                                    f"needs {named.describe()}",
                                    hint="pass --base with the full bundle the update was built against")
        base_result = verify.require(verify.verify_file(fb, wb, trust, now=now))
        held = _payload(base_result)
        taken = {f.path: (f.size, f.sha256) for f in named.files}
        for path, want in taken.items():
            if held.get(path) != want:
                raise StatementMismatchError(f"{wu}: takes {path} from its base, which "
                                             + ("holds other bytes under that name" if path in held else "lacks it"),
                                             hint="the update does not describe this base; rebuild it with --base")
        yield Pair(fu, fb, checked, base_result, taken, wu, wb)


def verify_pair_and_extract(update: Path | str | BundleBytes, base: Path | str | BundleBytes, trust: TrustPolicy,
                            dest: Path | str, *,
                            now: dt.datetime,
                            extra: Callable[[verify.VerificationResult], Mapping[str, bytes]] | None = None,
                            ) -> verify.VerificationResult:
    """`open_pair`, then extract the update's members and the files it takes from the base into the new
    folder `dest`, as `verify.verify_and_extract` does for one bundle. Returns the update's result.

    Raises:
        see `open_pair`; UsageError if `dest` exists; ArchiveError on I/O errors.
    """
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():  # checked first so a long verification is not wasted
        raise UsageError(f"{dest} already exists: a bundle is extracted only into a new folder",
                         hint="name a folder that does not exist yet; nothing was verified or written")
    with open_pair(update, base, trust, now=now) as pair:
        archive.extract(pair.update_file, dest, {n: (size, sha) for n, size, sha in pair.update.verified_files},
                        extra=extra(pair.update) if extra else None, also=[(pair.base_file, pair.taken)])
        return pair.update


def _payload(result: verify.VerificationResult) -> dict[str, tuple[int, str]]:
    return {name: (size, sha) for name, size, sha in result.verified_files
            if name != archive.STATEMENT and not name.startswith(archive.SIGNATURES_DIR)}
