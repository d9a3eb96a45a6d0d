"""buildah without a daemon: vfs storage in a folder of our own and chroot isolation.

Every build runs the same way in CI and on a laptop: ``buildah bud`` with the
``vfs`` storage driver under a storage folder that this module creates and
removes. vfs keeps layers as plain directories, so no overlay mounts or FUSE
are needed. ``RUN`` steps use ``--isolation chroot``, so no OCI runtime and no
user namespace are needed. Images leave that storage only through ``push``.

NOTE: this is tested as root. A non-root user needs buildah's rootless
setup (subordinate ids in /etc/subuid) and ``buildah unshare`` to delete the
storage folder, which this module does not do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ctr_images import tools
from ctr_images.registry import ResolvedImage

logger = logging.getLogger(__name__)

BUILD_TIMEOUT_SECONDS = 3600


class Buildah:
    """buildah bound to one vfs storage folder."""

    def __init__(self, storage_dir: Path):
        self.storage_dir = Path(storage_dir)
        self.tmp_dir = self.storage_dir / "tmp"

    def _command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.storage_dir / "root"), "--runroot", str(self.storage_dir / "run"),
                "--storage-driver", "vfs", *args]

    def _environment(self) -> dict:
        # buildah unpacks layers under TMPDIR (default /var/tmp); keep them in the storage folder.
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return dict(os.environ, TMPDIR=str(self.tmp_dir), BUILDAH_ISOLATION="chroot")

    def build(self, containerfile: Path, context: Path, name: str, *, build_args: dict[str, str] | None = None,
              labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
              timestamp: int | None = None, tls_verify: bool = True, pull: str = "true") -> None:
        """Build ``containerfile`` with ``context`` into the local image ``name``.

        ``timestamp`` (seconds since the epoch) becomes the image's creation
        time and the modification time of every file the build adds, so the
        same inputs give the same layer digests. ``pull`` is buildah's pull
        policy for ``FROM`` images (``never`` for images ``use_base`` imported).

        Raises:
            ToolNotFoundError: buildah is not installed.
            ToolError: the build fails.
        """
        args = ["bud", "--isolation", "chroot", "--file", str(containerfile), "--tag", name,
                "--identity-label=false", f"--tls-verify={str(tls_verify).lower()}", f"--pull={pull}"]
        if timestamp is not None:
            args += ["--timestamp", str(int(timestamp))]
        for key, value in sorted((build_args or {}).items()):
            args += ["--build-arg", f"{key}={value}"]
        for key, value in sorted((labels or {}).items()):
            args += ["--label", f"{key}={value}"]
        for key, value in sorted((annotations or {}).items()):
            args += ["--annotation", f"{key}={value}"]
        logger.info("building %s from %s with buildah", name, containerfile.name)
        completed = tools.run(self._command(*args, str(context)), what=f"build {name} from {containerfile}",
                              env=self._environment(), timeout=BUILD_TIMEOUT_SECONDS)
        logger.debug("buildah output:\n%s", completed.stdout[-4000:])

    def use_base(self, base: ResolvedImage) -> tuple[str, str]:
        """Return the ``FROM`` reference and pull policy for a base image.

        buildah names an image pulled from ``oci:DIR:TAG`` after ``DIR``, and
        rejects folders whose path is not a valid image name (``.cache``,
        upper-case letters). So skopeo first copies a layout base into this
        storage under a fixed name. skopeo keeps the manifest as it is, so the
        stored image has the layout's digest.
        """
        if not base.build_reference.startswith("oci:"):
            return base.build_reference, "true"
        name = f"localhost/ctr-base:{base.digest.split(':')[-1][:16]}"
        storage = f"containers-storage:[vfs@{self.storage_dir / 'root'}+{self.storage_dir / 'run'}]{name}"
        tools.run(["skopeo", "copy", "--quiet", base.build_reference, storage],
                  what=f"copy the base image {base.name} into buildah's storage", env=self._environment(),
                  timeout=BUILD_TIMEOUT_SECONDS)
        return name, "never"

    def import_tar(self, rootfs_tar: Path, name: str, *, env: list[str], cmd: str, labels: dict[str, str],
                   timestamp: int) -> None:
        """Create the one-layer local image ``name`` from a root filesystem tar file.

        Raises:
            ToolError: a buildah step fails.
        """
        environment = self._environment()
        container = tools.run(self._command("from", "--quiet", "scratch"), what="start a scratch container",
                              env=environment).stdout.strip()
        tools.run(self._command("add", container, str(rootfs_tar), "/"), what=f"add {rootfs_tar} to {name}",
                  env=environment, timeout=BUILD_TIMEOUT_SECONDS)
        config = ["config", "--cmd", cmd]
        for variable in env:
            config += ["--env", variable]
        for key, value in sorted(labels.items()):
            config += ["--label", f"{key}={value}"]
        tools.run(self._command(*config, container), what=f"configure {name}", env=environment)
        tools.run(self._command("commit", "--quiet", "--rm", "--identity-label=false", "--timestamp",
                                str(int(timestamp)), container, name),
                  what=f"commit {name}", env=environment, timeout=BUILD_TIMEOUT_SECONDS)

    def push(self, name: str, destination: str) -> None:
        """Copy the local image ``name`` to ``destination`` (``oci:DIR:TAG`` or ``docker://...``).

        Raises:
            ToolError: the push fails.
        """
        if destination.startswith("oci:"):
            Path(destination.removeprefix("oci:").rsplit(":", 1)[0]).mkdir(parents=True, exist_ok=True)
        tools.run(self._command("push", "--quiet", name, destination), what=f"write {name} to {destination}",
                  env=self._environment(), timeout=BUILD_TIMEOUT_SECONDS)

    def remove_image(self, name: str) -> None:
        """Delete the local image ``name`` from this storage."""
        tools.run(self._command("rmi", "--force", name), what=f"remove the local image {name}",
                  env=self._environment(), timeout=600)


@contextlib.contextmanager
def temporary_buildah(parent: Path | None = None) -> Iterator[Buildah]:
    """Yield a ``Buildah`` whose storage folder is deleted afterwards.

    A fresh storage per build keeps builds independent of each other: no
    cached layer or stale tag from an earlier build can leak into an image.
    """
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    storage = Path(tempfile.mkdtemp(prefix="ctr-buildah-", dir=parent))
    try:
        yield Buildah(storage)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
