"""Exceptions raised while building, checking, pushing and reading images.

CtrError
 ├── ModelVersionNotFoundError   the MLflow registry has no such model version or alias
 └── ImageError                  an image cannot be built, checked, pushed or read
      ├── ToolNotFoundError      a command-line tool (buildah, skopeo, ...) is not installed
      ├── ToolError              a command-line tool exited with an error
      ├── ImageNotFoundError     a layout, tag or registry reference names no image
      ├── ImageContentError      an image does not have the layers or labels a model image needs
      └── RegistryUnavailableError  no image registry responds at the given address

Bundle problems (missing files, wrong checksums) keep the inference side's
``BundleError`` classes, so a damaged bundle is reported the same way
whether a worker or the bake finds it.
"""

from __future__ import annotations

from ctr_inference.errors import CtrError


class ModelVersionNotFoundError(CtrError):
    """The MLflow registry has no such model version or alias."""


class ImageError(CtrError):
    """An image cannot be built, checked, pushed or read."""


class ToolNotFoundError(ImageError):
    """A command-line tool that the image steps run is not installed."""


class ToolError(ImageError):
    """A command-line tool exited with a non-zero status."""


class ImageNotFoundError(ImageError):
    """A layout, tag or registry reference names no image."""


class ImageContentError(ImageError):
    """An image lacks the bundle layer or the labels that a model image carries."""


class RegistryUnavailableError(ImageError):
    """No image registry responds at the given address."""
