"""Exceptions raised by ``ctr deploy``.

DeployError
 ├── ImageReferenceError        an image reference is invalid or lacks a digest
 ├── OverlayError               an overlay or its release block is missing or invalid
 ├── GitError                   a git command failed
 ├── DirtyWorkingTreeError      tracked files have uncommitted changes
 ├── PromotionNotFoundError     no promotion matches the request
 ├── NotAPromotionError         a named commit is not a promotion of the environment
 ├── ImageNotFoundError         the registry returned that an image does not exist
 ├── RegistryUnavailableError   the registry could not be asked
 └── ClusterUnreachableError    the Kubernetes API could not be reached
"""

from __future__ import annotations

from ctr_inference.errors import CtrError


class DeployError(CtrError):
    """Base class of the errors of the deploy commands."""


class ImageReferenceError(DeployError):
    """An image reference cannot be parsed, or a digest is required and missing."""


class OverlayError(DeployError):
    """An overlay file is missing, or its release block is missing or ambiguous."""


class GitError(DeployError):
    """A git command exited with an error."""


class DirtyWorkingTreeError(DeployError):
    """Tracked files have uncommitted changes, so a deploy commit could include them."""


class PromotionNotFoundError(DeployError):
    """No promotion commit of the environment matches the request."""


class NotAPromotionError(DeployError):
    """A named commit is not a promotion of the environment."""


class ImageNotFoundError(DeployError):
    """The registry was reached and has no image with this reference."""


class RegistryUnavailableError(DeployError):
    """The registry could not be reached or did not let the client read the image."""


class ClusterUnreachableError(DeployError):
    """The Kubernetes API server could not be reached."""
