"""Image references and registries: resolve a base image, push with the digest kept, inspect.

A reference is either an OCI image layout on disk (``oci:DIR[:TAG]``, or
``DIR[:TAG]`` for an existing folder) or an image in a registry
(``[docker://]HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]``). skopeo does the
registry work. Registries on a loopback host (``localhost``, ``127.0.0.0/8``,
``::1``) are reached over plain HTTP without TLS verification, like the
``docker-registry`` that tests start. Every other registry needs HTTPS with
a verified certificate unless the caller passes ``tls_verify=False``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ctr_inference.oci import parse_layout_reference

from ctr_images import labels as oci_labels
from ctr_images import tools
from ctr_images.errors import (
    ImageContentError,
    ImageError,
    ImageNotFoundError,
    RegistryUnavailableError,
    ToolError,
)
from ctr_images.oci_layout import read_manifest, select_tag

logger = logging.getLogger(__name__)

DOCKER_TRANSPORT = "docker://"
OCI_TRANSPORT = "oci:"
SCRATCH = "scratch"
PROBE_TIMEOUT_SECONDS = 5
SKOPEO_TIMEOUT_SECONDS = 1800


@dataclass(frozen=True)
class RegistryRepository:
    """A repository in a registry: ``host`` (with port) and ``repository`` path."""

    host: str
    repository: str

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}"

    def reference(self, tag: str = "", digest: str = "") -> str:
        """Return ``host/repository[:tag][@digest]``."""
        text = str(self)
        if tag:
            text += f":{tag}"
        if digest:
            text += f"@{digest}"
        return text


@dataclass(frozen=True)
class ResolvedImage:
    """An image pinned for a build: its name for labels, the reference for ``FROM``, and its digest."""

    name: str
    build_reference: str
    digest: str
    tls_verify: bool = True

    @property
    def is_scratch(self) -> bool:
        return self.build_reference == SCRATCH


def is_loopback(host: str) -> bool:
    """Tell whether a registry host (``name[:port]`` or ``[v6]:port``) is this machine."""
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_tls_verify(host: str) -> bool:
    """Return whether to use HTTPS with certificate checks for ``host``: yes unless it is loopback."""
    return not is_loopback(host)


def parse_repository(text: str) -> tuple[RegistryRepository, str]:
    """Split ``[docker://]HOST[:PORT]/REPOSITORY[:TAG]`` into the repository and the tag (maybe empty).

    Raises:
        ImageError: there is no registry host, no repository, or a digest in place of a tag.
    """
    rest = text.removeprefix(DOCKER_TRANSPORT)
    if "@" in rest:
        raise ImageError(f"invalid push destination {text!r}: name a repository (and a tag), not a digest")
    host, _, path = rest.partition("/")
    if not path or not ("." in host or ":" in host or host == "localhost"):
        raise ImageError(f"invalid registry repository {text!r}, expected HOST[:PORT]/REPOSITORY "
                         "such as 127.0.0.1:5000/ctr-model")
    tag = ""
    name, colon, maybe_tag = path.rpartition(":")
    if colon and "/" not in maybe_tag:
        path, tag = name, maybe_tag
    if not path or path != path.lower():
        raise ImageError(f"invalid repository {path!r} in {text!r}: use lowercase letters, digits, '.', '_', '-', '/'")
    return RegistryRepository(host, path), tag


def without_tag_if_pinned(name: str) -> str:
    """Drop the tag from ``repository:tag@digest``; skopeo and buildah reject a tag beside a digest."""
    repository, at, digest = name.partition("@")
    if not at:
        return name
    if repository.rfind(":") > repository.rfind("/"):
        repository = repository[: repository.rfind(":")]
    return f"{repository}@{digest}"


def local_layout(reference: str) -> tuple[Path, str] | None:
    """Return (layout folder, tag) when ``reference`` names an image layout, else None.

    ``oci:DIR[:TAG]`` always names a layout; ``DIR[:TAG]`` does when ``DIR`` exists.

    Raises:
        ImageError: the reference is empty.
    """
    if not reference.strip():
        raise ImageError("the image reference is empty; pass oci:DIR[:TAG], DIR[:TAG] or HOST/REPOSITORY[:TAG]")
    if reference.startswith(OCI_TRANSPORT):
        return parse_layout_reference(reference)
    if Path(reference).is_dir():
        return Path(reference), ""
    path, tag = parse_layout_reference(reference)
    if tag and path.is_dir():
        return path, tag
    return None


def check_registry(host: str, tls_verify: bool) -> None:
    """Check that a registry responds at ``host`` (the ``/v2/`` endpoint of the distribution API).

    A 401 response counts, because the registry is there and requires credentials.

    Raises:
        RegistryUnavailableError: nothing responds, or the response is not a registry's.
    """
    url = f"{'https' if tls_verify else 'http'}://{host}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise RegistryUnavailableError(f"no image registry responds at {url} ({reason}); "
                                       "start the registry or check the address") from error
    if status not in (200, 401):
        raise RegistryUnavailableError(f"{url} returned HTTP {status}, so it is not an image registry")


def push_layout(layout: Path, tag: str, destination: RegistryRepository, *, tls_verify: bool,
                destination_tag: str = "") -> str:
    """Copy image ``tag`` of an OCI layout to ``destination`` and return the pushed manifest digest.

    The image is tagged ``destination_tag`` in the registry, or ``tag`` when that is empty.

    ``--preserve-digests`` makes skopeo fail instead of converting the
    manifest, so the pushed digest is the layout's digest.

    Raises:
        RegistryUnavailableError: the registry does not respond.
        ToolError: skopeo fails.
    """
    check_registry(destination.host, tls_verify)
    target = destination.reference(destination_tag or tag)
    with tempfile.TemporaryDirectory(prefix="ctr-push-") as scratch:
        digest_file = Path(scratch) / "digest"
        tools.run(["skopeo", "copy", "--quiet", "--preserve-digests", "--digestfile", str(digest_file),
                   f"--dest-tls-verify={str(tls_verify).lower()}",
                   f"{OCI_TRANSPORT}{Path(layout).resolve()}:{tag}", DOCKER_TRANSPORT + target],
                  what=f"push {layout}:{tag} to {target}", timeout=SKOPEO_TIMEOUT_SECONDS)
        digest = digest_file.read_text().strip()
    logger.info("pushed %s:%s to %s@%s", layout, tag, target, digest)
    return digest


def inspect(reference: str, tls_verify: bool | None = None) -> dict:
    """Return skopeo's description of an image: ``Digest``, ``Labels``, ``Created``, ``Layers`` and more.

    ``tls_verify`` None means: no TLS for loopback registries, verified TLS otherwise.

    Raises:
        ImageNotFoundError: the image does not exist, or its registry does not respond.
    """
    layout = local_layout(reference)
    args = ["skopeo", "inspect", "--no-tags"]
    if layout is not None:
        folder, tag = layout
        target = f"{OCI_TRANSPORT}{folder.resolve()}:{select_tag(folder, tag)}"
    else:
        name = reference.removeprefix(DOCKER_TRANSPORT)
        tls = default_tls_verify(name.partition("/")[0]) if tls_verify is None else tls_verify
        args.append(f"--tls-verify={str(tls).lower()}")
        target = DOCKER_TRANSPORT + without_tag_if_pinned(name)
    try:
        completed = tools.run([*args, target], what=f"inspect {reference}", timeout=300)
    except ToolError as error:
        raise ImageNotFoundError(f"cannot read image {reference}: {error}") from error
    return json.loads(completed.stdout)


def resolve_image(reference: str | None, tls_verify: bool | None = None) -> ResolvedImage:
    """Pin a base image reference to its manifest digest.

    ``None``, ``""`` and ``scratch`` mean no base. A layout reference keeps
    its folder (``FROM oci:DIR:TAG``) and is named by its tag in labels. A
    registry reference is rewritten to ``name@digest``, so the build uses
    exactly the image whose digest the labels record.

    Raises:
        ImageNotFoundError: the image does not exist or its registry does not respond.
    """
    if not reference or reference == SCRATCH:
        return ResolvedImage(SCRATCH, SCRATCH, "")
    layout = local_layout(reference)
    if layout is not None:
        folder, tag = layout
        folder = folder.resolve()
        tag = select_tag(folder, tag)
        _, digest = read_manifest(folder, tag)
        return ResolvedImage(tag, f"{OCI_TRANSPORT}{folder}:{tag}", digest)

    name = reference.removeprefix(DOCKER_TRANSPORT)
    host = name.partition("/")[0]
    tls = default_tls_verify(host) if tls_verify is None else tls_verify
    digest = name.partition("@")[2] or inspect(name, tls)["Digest"]
    pinned = without_tag_if_pinned(f"{name.partition('@')[0]}@{digest}")
    return ResolvedImage(name, DOCKER_TRANSPORT + pinned, digest, tls)


def check_base_digest(layout: Path, tag: str, base: ResolvedImage) -> None:
    """Check that buildah built on the base image whose digest the labels record.

    buildah writes the digest of the image it pulled for ``FROM`` into the
    manifest annotation ``org.opencontainers.image.base.digest``. Only a
    layout base needs the check: its tag can move, while a registry base is
    pulled by digest.

    Raises:
        ImageContentError: the digests differ (the base changed between resolving and building).
    """
    if not base.build_reference.startswith(OCI_TRANSPORT):
        return
    manifest, _ = read_manifest(layout, tag)
    built_on = manifest.get("annotations", {}).get(oci_labels.BASE_DIGEST, "")
    if base.digest and built_on and built_on != base.digest:
        raise ImageContentError(f"{layout}:{tag} was built on {built_on}, but {base.name} resolved to "
                                f"{base.digest}; the base image changed during the build, build again")
