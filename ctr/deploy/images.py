"""Image references: ``[registry/]repository[:tag][@algorithm:hex]``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ctr.deploy.errors import ImageReferenceError

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
# <model>-v<version>-<git short sha>, as the bake names images.
_RELEASE_TAG = re.compile(r"^(?P<model>.+)-v(?P<version>[0-9]+)-(?P<commit>[0-9a-f]{7,40})$")


@dataclass(frozen=True)
class ImageReference:
    """A parsed image reference; ``registry`` is empty for a name without a host."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """Return ``registry/repository`` (the kustomize ``newName``)."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: str) -> ImageReference:
        """Return the same reference pinned to ``digest``."""
        if not _DIGEST.match(digest):
            raise ImageReferenceError(f"invalid digest {digest!r}, expected sha256:<64 hex digits>")
        return ImageReference(self.registry, self.repository, self.tag, digest)

    def release(self) -> tuple[str, str] | None:
        """Return (model name, model version) from a ``<model>-v<version>-<sha>`` tag, or None."""
        match = _RELEASE_TAG.match(self.tag)
        return (match.group("model"), match.group("version")) if match else None


def parse_image_reference(text: str) -> ImageReference:
    """Parse an image reference.

    The first path component is a registry host when it contains a dot or a
    colon or is ``localhost``, as in Docker's reference grammar.

    Raises:
        ImageReferenceError: the text is not a valid reference.
    """
    rest, _, digest = text.strip().partition("@")
    if digest and not _DIGEST.match(digest):
        raise ImageReferenceError(f"invalid digest {digest!r} in image reference {text!r}, "
                                  "expected sha256:<64 hex digits>")
    tag = ""
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise ImageReferenceError(f"invalid tag {tag!r} in image reference {text!r}")

    registry, repository = "", rest
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    if not repository or not _REPOSITORY.match(repository):
        raise ImageReferenceError(f"invalid repository {repository!r} in image reference {text!r}")
    if not tag and not digest:
        raise ImageReferenceError(f"image reference {text!r} has neither a tag nor a digest")
    return ImageReference(registry, repository, tag, digest)
