"""The inference runtime image: ``model-images/runtime.Dockerfile`` built by buildah.

The host prepares everything the build installs, so the build itself needs
no network:

- the wheels of ctr-inference's locked dependencies and of its ``compiled``
  extra (lleaves and llvmlite), exported from ``uv.lock`` with their hashes
  and downloaded by the locked pip for linux/x86_64 and CPython 3.11
  (cached under ``<cache>/wheels/<key>/``);
- the ctr-inference wheel, built from this checkout;
- the Debian packages the wheels link against, from the host's apt sources
  (cached under ``<cache>/debs/<key>/``).

The image is tagged ``ctr-runtime-<git short sha>`` and labelled with its
base image's name and digest. A hash of every input (Dockerfile,
requirements, wheels, packages, base digest) is stored in the label
``ai.ctr.runtime.inputs``. When the target layout already contains an image
with the same hash, that image is returned without a rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ctr_images import labels as oci_labels
from ctr_images import tools
from ctr_images.buildah import temporary_buildah
from ctr_images.errors import ImageError
from ctr_images.oci_layout import layout_tags, read_config, read_manifest
from ctr_images.registry import ResolvedImage, check_base_digest, resolve_image

logger = logging.getLogger(__name__)

DOCKERFILE = "runtime.Dockerfile"
PACKAGE = "ctr-inference"
# The optional dependencies of ctr-inference that the runtime installs: lleaves and
# llvmlite, which load the compiled form of a model that the bake stores in its bundle.
EXTRAS = ("compiled",)
# Packages without which the runtime image is not built, and what the worker would lack.
REQUIRED_PACKAGES = {
    "lightgbm": "the worker cannot score",
    "lleaves": "the worker cannot load a bundle's compiled form and scores with LightGBM",
    "llvmlite": "lleaves cannot load a bundle's compiled form",
}
# LightGBM's lib_lightgbm.so links against libgomp.so.1, which slim Debian images lack.
DEBIAN_PACKAGES = ("libgomp1",)
# The release of the base images; the host's apt sources should be the same release.
DEBIAN_RELEASE = "bookworm"
PYTHON_VERSION = "3.11"
# glibc of Debian bookworm is 2.36, so every manylinux wheel up to 2_36 runs there.
PLATFORMS = tuple(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)) + ("manylinux2014_x86_64",)
WORKER_UID = 10001
TAG_PREFIX = "ctr-runtime"

_REQUIREMENT_START = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")


@dataclass(frozen=True)
class RuntimeImage:
    """A built runtime image: its layout, tag and manifest digest, and the base it was built on."""

    layout: Path
    tag: str
    digest: str
    base: ResolvedImage

    @property
    def reference(self) -> str:
        """Return the ``oci:DIR:TAG`` reference that ``ctr image bake --base`` accepts."""
        return f"oci:{self.layout}:{self.tag}"


def _uv_export(*args: str) -> str:
    completed = tools.run(["uv", "export", "--frozen", "--no-header", "--no-emit-workspace", *args],
                          what="export requirements from uv.lock", cwd=tools.repository_root(), timeout=300)
    return completed.stdout


def requirement_blocks(exported: str) -> dict[str, str]:
    """Split ``uv export`` output into one block per requirement (the pin and its hash lines), by name."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in exported.splitlines():
        match = _REQUIREMENT_START.match(line)
        if match:
            current = match.group("name").lower().replace("_", "-")
            blocks[current] = [line]
        elif current and line.startswith("    --hash="):
            blocks[current].append(line)
        elif not line.startswith(" "):
            current = None
    return {name: "\n".join(lines) for name, lines in blocks.items()}


def locked_requirements() -> str:
    """Return ctr-inference's locked dependencies and its ``EXTRAS``, with hashes, as a pip requirements file.

    Raises:
        ImageError: the export lacks a package of ``REQUIRED_PACKAGES``.
    """
    extras = [arg for extra in EXTRAS for arg in ("--extra", extra)]
    blocks = requirement_blocks(_uv_export("--package", PACKAGE, "--no-dev", *extras))
    for name, consequence in REQUIRED_PACKAGES.items():
        if name not in blocks:
            raise ImageError(f"uv.lock exports no {name} for {PACKAGE} with extras {', '.join(EXTRAS)}; "
                             f"without it {consequence}")
    return "\n".join(blocks[name] for name in sorted(blocks)) + "\n"


def locked_pip_requirement() -> str:
    """Return the locked pip of the dev group, with hashes; the build runs pip from this wheel."""
    blocks = requirement_blocks(_uv_export("--only-group", "dev"))
    if "pip" not in blocks:
        raise ImageError("uv.lock has no pip in the dev group; add it with `uv add --group dev pip`")
    return blocks["pip"] + "\n"


def pinned_version(requirements: str, name: str) -> str:
    """Return the version pinned for ``name`` in a requirements text, or an empty string."""
    for line in requirements.splitlines():
        match = _REQUIREMENT_START.match(line)
        if match and match.group("name").lower() == name:
            return match.group("version")
    return ""


def _key(*parts: str) -> str:
    return hashlib.sha256("\n\0".join(parts).encode()).hexdigest()[:16]


def download_wheels(requirements: str, cache_dir: Path) -> Path:
    """Download the wheels of ``requirements`` for linux/x86_64 CPython 3.11 once, and return their folder.

    pip checks every wheel against the hashes from the lock file.

    Raises:
        ToolError: pip cannot download a wheel (no network to PyPI, or no wheel for the platform).
    """
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    folder = Path(cache_dir) / "wheels" / _key(requirements, json.dumps(platform_args), PYTHON_VERSION)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
    try:
        (staging / "requirements.txt").write_text(requirements)
        started = time.monotonic()
        tools.run([sys.executable, "-m", "pip", "download", "--quiet",
                   "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", "--require-hashes",
                   "--python-version", PYTHON_VERSION, "--implementation", "cp",
                   "--abi", f"cp{PYTHON_VERSION.replace('.', '')}", *platform_args,
                   "--requirement", str(staging / "requirements.txt"), "--dest", str(staging)],
                  what="download the runtime's wheels", timeout=1800)
        (staging / "requirements.txt").unlink()
        os.replace(staging, folder)
        logger.info("downloaded %d wheels into %s in %.0f s", len(list(folder.glob("*.whl"))), folder,
                    time.monotonic() - started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_inference_wheel(destination: Path) -> Path:
    """Build the ctr-inference wheel from this checkout into ``destination`` and return its path."""
    tools.run(["uv", "build", "--package", PACKAGE, "--wheel", "--quiet", "--out-dir", str(destination)],
              what=f"build the {PACKAGE} wheel", cwd=tools.repository_root(), timeout=600)
    wheels = sorted(Path(destination).glob("ctr_inference-*.whl"))
    if len(wheels) != 1:
        raise ImageError(f"expected one {PACKAGE} wheel in {destination}, found {len(wheels)}")
    return wheels[0]


def _host_release() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return ""
    match = re.search(r"^VERSION_CODENAME=(\S+)$", text, re.MULTILINE)
    return match.group(1).strip('"') if match else ""


def download_debs(cache_dir: Path) -> Path:
    """Download the Debian packages the runtime needs from the host's apt sources once, and return their folder.

    The cache key is the packages' versions and SHA-256 hashes in the apt index.

    Raises:
        ToolError: apt cannot find or download a package (run ``apt-get update``).
    """
    release = _host_release()
    if release != DEBIAN_RELEASE:
        # NOTE: the packages must match the base image's release; dpkg fails in the build when they do not.
        logger.warning("this machine runs Debian release %r, the base images use %s; the downloaded "
                       "packages may not install in the image", release or "unknown", DEBIAN_RELEASE)
    show = tools.run(["apt-cache", "show", "--no-all-versions", *DEBIAN_PACKAGES],
                     what=f"look up {', '.join(DEBIAN_PACKAGES)} in the apt index (run apt-get update first)",
                     timeout=120).stdout
    facts = [line for line in show.splitlines() if line.startswith(("Package:", "Version:", "SHA256:"))]
    folder = Path(cache_dir) / "debs" / _key(*facts)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder.parent))
    try:
        tools.run(["apt-get", "download", "--quiet", *DEBIAN_PACKAGES], what="download the runtime's Debian packages",
                  cwd=staging, timeout=600)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _digest_files(folder: Path) -> list[str]:
    return [f"{path.relative_to(folder).as_posix()} {hashlib.sha256(path.read_bytes()).hexdigest()}"
            for path in sorted(folder.rglob("*")) if path.is_file()]


def prepare_context(context: Path, wheels: Path, pip_wheels: Path, inference_wheel: Path, debs: Path,
                    requirements: str) -> None:
    """Fill a build context with ``wheels/`` (plus ``requirements.txt``) and ``debs/``."""
    (context / "wheels").mkdir(parents=True)
    (context / "debs").mkdir()
    for wheel in sorted(wheels.glob("*.whl")) + sorted(pip_wheels.glob("pip-*.whl")) + [inference_wheel]:
        _link_or_copy(wheel, context / "wheels" / wheel.name)
    (context / "wheels" / "requirements.txt").write_text(requirements)
    for package in sorted(debs.glob("*.deb")):
        _link_or_copy(package, context / "debs" / package.name)


def find_built(layout: Path, inputs_key: str) -> tuple[str, str] | None:
    """Return (tag, digest) of an image in ``layout`` built from the same inputs, or None."""
    if not (Path(layout) / "index.json").is_file():
        return None
    for tag in layout_tags(layout):
        manifest, digest = read_manifest(layout, tag)
        if read_config(layout, manifest).get("config", {}).get("Labels", {}).get(
                oci_labels.RUNTIME_INPUTS) == inputs_key:
            return tag, digest
    return None


def runtime_labels(base: ResolvedImage, requirements: str, inputs_key: str, created: int) -> dict[str, str]:
    """Return the OCI labels of the runtime image."""
    labels = {
        oci_labels.TITLE: "ctr inference runtime",
        oci_labels.REVISION: oci_labels.platform_commit(),
        oci_labels.CREATED: oci_labels.rfc3339(created),
        oci_labels.SOURCE: oci_labels.source_url(),
        oci_labels.BASE_NAME: base.name,
        oci_labels.RUNTIME_INPUTS: inputs_key,
        "ai.ctr.runtime.python": PYTHON_VERSION,
        "ai.ctr.runtime.lightgbm": pinned_version(requirements, "lightgbm"),
        "ai.ctr.runtime.lleaves": pinned_version(requirements, "lleaves"),
    }
    if base.digest:
        labels[oci_labels.BASE_DIGEST] = base.digest
    return labels


def build_runtime_image(base: str | None = None, layout: Path | None = None, cache_dir: Path | None = None,
                        tag: str | None = None) -> RuntimeImage:
    """Build the runtime image on ``base`` into ``layout`` and return it.

    ``base`` is any reference ``resolve_image`` accepts; None means the
    debootstrap base image (built first when it is not cached). The default
    layout is ``.ctr/images/runtime`` of the checkout.

    Raises:
        ImageError: an input cannot be prepared, or the build fails.
    """
    from ctr_images.base_image import ensure_base_image

    cache = Path(cache_dir or tools.cache_root())
    layout = Path(layout or tools.repository_root() / ".ctr" / "images" / "runtime").resolve()
    if base is None:
        base = ensure_base_image(cache).reference
    resolved = resolve_image(base)
    if resolved.is_scratch:
        raise ImageError("the runtime image needs a base image with Python 3.11, not scratch")

    requirements = locked_requirements()
    wheels = download_wheels(requirements, cache)
    pip_wheels = download_wheels(locked_pip_requirement(), cache)
    debs = download_debs(cache)
    dockerfile = tools.dockerfile(DOCKERFILE)

    with tempfile.TemporaryDirectory(prefix="ctr-runtime-") as scratch:
        context = Path(scratch) / "context"
        inference_wheel = build_inference_wheel(Path(scratch) / "dist")
        prepare_context(context, wheels, pip_wheels, inference_wheel, debs, requirements)
        inputs_key = _key(dockerfile.read_text(), resolved.digest, *_digest_files(context))

        built = find_built(layout, inputs_key)
        if built is not None:
            logger.info("runtime image %s:%s has the same inputs, reusing it", layout, built[0])
            return RuntimeImage(layout, built[0], built[1], resolved)

        commit = oci_labels.platform_commit()
        tag = tag or f"{TAG_PREFIX}-{commit[:7]}"
        created = oci_labels.commit_time() or int(time.time())
        name = f"localhost/ctr-runtime:{tag}"
        started = time.monotonic()
        with temporary_buildah() as buildah:
            from_reference, pull = buildah.use_base(resolved)
            buildah.build(dockerfile, context, name, build_args={"BASE_IMAGE": from_reference},
                          labels=runtime_labels(resolved, requirements, inputs_key, created),
                          annotations={oci_labels.BASE_NAME: resolved.name}, timestamp=created,
                          tls_verify=resolved.tls_verify, pull=pull)
            buildah.push(name, f"oci:{layout}:{tag}")
    check_base_digest(layout, tag, resolved)
    _, digest = read_manifest(layout, tag)
    logger.info("built runtime image %s:%s (%s) on %s in %.0f s", layout, tag, digest, resolved.name,
                time.monotonic() - started)
    return RuntimeImage(layout, tag, digest, resolved)
