"""The local base image: a minimal Debian root filesystem made by debootstrap.

No image registry is reachable from build machines without internet access,
so local builds and tests cannot pull ``python:3.11-slim``. Instead
``make base-image`` runs debootstrap (``minbase`` variant plus Python 3.11
and CA certificates) from the Debian mirror, packs the root filesystem into
a tar file and imports it with buildah as a one-layer image in an OCI layout.

Both the tar file and the layout are cached under
``<cache>/base/<key>/``, where the key is a hash of everything that decides
the result (suite, mirror, packages, steps), so a second run returns at once.

NOTE: the Debian mirror changes over time, so the same key built on two days
can contain different package versions. Delete the cache folder to refresh
it. debootstrap needs root.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ctr_images import labels as oci_labels
from ctr_images import tools
from ctr_images.buildah import temporary_buildah
from ctr_images.errors import ImageError
from ctr_images.oci_layout import layout_tags, read_manifest

logger = logging.getLogger(__name__)

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
VARIANT = "minbase"
# The packages python:3.11-slim-bookworm also contains: the interpreter and CA certificates.
PACKAGES = ("ca-certificates", "python3")
# Raise when the steps below change, so cached base images are rebuilt.
RECIPE_VERSION = 1
# Files debootstrap copies from the build machine or writes as logs; runtimes provide their own.
HOST_FILES = ("etc/hostname", "etc/resolv.conf")
EXCLUDED_CONTENT = ("./dev/*", "./proc/*", "./sys/*", "./run/*", "./tmp/*", "./var/cache/apt/archives/*.deb",
                    "./var/lib/apt/lists/*", "./var/log/*")
IMAGE_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
DEBOOTSTRAP_TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class BaseImage:
    """The debootstrap base image in its OCI layout."""

    layout: Path
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        """Return the ``oci:DIR:TAG`` reference that buildah's ``FROM`` accepts."""
        return f"oci:{self.layout}:{self.tag}"


def mirror() -> str:
    """Return the Debian mirror: ``$DEBIAN_MIRROR`` or deb.debian.org."""
    return os.environ.get("DEBIAN_MIRROR", DEFAULT_MIRROR)


def recipe() -> dict:
    """Return everything that decides the base image's content."""
    return {"suite": SUITE, "mirror": mirror(), "variant": VARIANT, "packages": sorted(PACKAGES),
            "excluded": list(EXCLUDED_CONTENT), "env": list(IMAGE_ENV), "recipe_version": RECIPE_VERSION}


def recipe_key() -> str:
    """Return the cache key of the base image: a hash of its recipe."""
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:16]


def image_tag() -> str:
    return f"debian-{SUITE}-{recipe_key()}"


def build_rootfs_tar(destination: Path) -> Path:
    """Run debootstrap and pack the root filesystem into ``destination`` (a tar file).

    The tar has its entries in name order with numeric owners, and leaves out
    device nodes, mount points' content, apt's download caches and logs.

    Raises:
        ImageError: this process is not root.
        ToolNotFoundError: debootstrap or tar is missing.
        ToolError: debootstrap fails (for example when the mirror is unreachable).
    """
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root to create device nodes and chroot; run `make base-image` as root")
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".debootstrap-", dir=destination.parent))
    rootfs = staging / "rootfs"
    try:
        started = time.monotonic()
        logger.info("running debootstrap %s (%s, %s) from %s; a first run takes a few minutes",
                    SUITE, VARIANT, ", ".join(PACKAGES), mirror())
        tools.run(["debootstrap", f"--variant={VARIANT}", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs),
                   mirror()], what=f"create a Debian {SUITE} root filesystem", timeout=DEBOOTSTRAP_TIMEOUT_SECONDS)
        for relative in HOST_FILES:
            (rootfs / relative).unlink(missing_ok=True)

        partial = staging / "rootfs.tar"
        excludes = [f"--exclude={pattern}" for pattern in EXCLUDED_CONTENT]
        tools.run(["tar", "--create", "--file", str(partial), "--directory", str(rootfs), "--sort=name",
                   "--numeric-owner", *excludes, "."], what="pack the Debian root filesystem", timeout=600)
        os.replace(partial, destination)
        logger.info("packed the %s root filesystem into %s (%.0f MiB) in %.0f s", SUITE, destination,
                    destination.stat().st_size / 2**20, time.monotonic() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def import_rootfs(rootfs_tar: Path, layout: Path, tag: str, created: int) -> None:
    """Import a root filesystem tar file as a one-layer image ``tag`` in an OCI layout."""
    image_labels = {
        oci_labels.TITLE: f"ctr base: Debian {SUITE} ({VARIANT}, debootstrap)",
        oci_labels.CREATED: oci_labels.rfc3339(created),
        "ai.ctr.base.recipe": json.dumps(recipe(), sort_keys=True),
    }
    name = f"localhost/ctr-base:{tag}"
    with temporary_buildah() as buildah:
        buildah.import_tar(rootfs_tar, name, env=list(IMAGE_ENV), cmd="/bin/bash", labels=image_labels,
                           timestamp=created)
        buildah.push(name, f"oci:{Path(layout).resolve()}:{tag}")


def ensure_base_image(cache_dir: Path | None = None) -> BaseImage:
    """Return the debootstrap base image, building the root filesystem and the image when not cached.

    Raises:
        ImageError: debootstrap cannot run here (see ``build_rootfs_tar``).
        ToolError: debootstrap, tar or buildah fails.
    """
    folder = Path(cache_dir or tools.cache_root()) / "base" / recipe_key()
    rootfs_tar = folder / "rootfs.tar"
    layout = (folder / "layout").resolve()
    tag = image_tag()

    if not (layout / "index.json").is_file() or tag not in layout_tags(layout):
        if not rootfs_tar.is_file():
            build_rootfs_tar(rootfs_tar)
        logger.info("importing %s as the base image %s:%s", rootfs_tar, layout, tag)
        import_rootfs(rootfs_tar, layout, tag, int(rootfs_tar.stat().st_mtime))
    _, digest = read_manifest(layout, tag)
    return BaseImage(layout, tag, digest)
