"""Read a model bundle out of an OCI image layout on disk, without a container runtime.

An image layout (``oci-layout``, ``index.json``, ``blobs/sha256/…``) is what
``skopeo copy … oci:DIR:TAG`` and ``umoci`` write. The bundle layer is the
layer whose manifest annotation ``ai.ctr.layer`` is ``bundle`` (the last layer
when no layer is annotated). Every blob read is checked against its digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from pathlib import Path, PurePosixPath

from ctr_inference.errors import BundleChecksumError, BundleNotFoundError

logger = logging.getLogger(__name__)

BUNDLE_PATH_IN_IMAGE = "opt/ctr/bundle"
LAYER_ANNOTATION = "ai.ctr.layer"
REF_NAME = "org.opencontainers.image.ref.name"


def parse_layout_reference(reference: str) -> tuple[Path, str]:
    """Split ``DIR:TAG`` (the ``oci:`` transport's syntax, without ``oci:``) into path and tag."""
    reference = reference.removeprefix("oci:")
    path, _, tag = reference.rpartition(":")
    if not path or "/" in tag:
        return Path(reference), ""
    return Path(path), tag


def read_blob(layout: Path, digest: str) -> bytes:
    """Read a blob and check it against its digest.

    Raises:
        BundleNotFoundError: the blob is missing.
        BundleChecksumError: the blob's content does not match its digest.
    """
    algorithm, _, hex_digest = digest.partition(":")
    path = layout / "blobs" / algorithm / hex_digest
    if not path.is_file():
        raise BundleNotFoundError(f"image layout {layout} has no blob {digest}")
    data = path.read_bytes()
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != hex_digest:
        raise BundleChecksumError(f"blob {digest} in {layout} has digest {algorithm}:{actual}")
    return data


def resolve_manifest(layout: Path, tag: str) -> dict:
    """Return the image manifest that ``tag`` names in the layout's index.

    Raises:
        BundleNotFoundError: the layout or the tag does not exist.
    """
    index_path = layout / "index.json"
    if not index_path.is_file():
        raise BundleNotFoundError(f"no OCI image layout at {layout}: index.json is missing")
    index = json.loads(index_path.read_text())
    manifests = index.get("manifests", [])
    for descriptor in manifests:
        name = descriptor.get("annotations", {}).get(REF_NAME, "")
        if name == tag or (not tag and len(manifests) == 1):
            manifest = json.loads(read_blob(layout, descriptor["digest"]))
            manifest["_digest"] = descriptor["digest"]
            return manifest
    known = sorted(d.get("annotations", {}).get(REF_NAME, "?") for d in manifests)
    raise BundleNotFoundError(f"image layout {layout} has no tag {tag!r} (tags: {', '.join(known)})")


def bundle_layer(manifest: dict) -> dict:
    """Return the descriptor of the manifest's bundle layer."""
    layers = manifest.get("layers", [])
    if not layers:
        raise BundleNotFoundError("image manifest has no layers")
    for layer in layers:
        if layer.get("annotations", {}).get(LAYER_ANNOTATION) == "bundle":
            return layer
    return layers[-1]


def extract_bundle(reference: str, destination: Path) -> Path:
    """Unpack the bundle layer of ``DIR:TAG`` into ``destination`` and return the bundle path.

    Only regular files and directories under the bundle path are written;
    links, devices and paths that leave the destination are rejected.

    Raises:
        BundleNotFoundError: the layout, tag, layer or bundle path is missing.
        BundleChecksumError: a blob does not match its digest, or the layer has unsafe entries.
    """
    layout, tag = parse_layout_reference(reference)
    manifest = resolve_manifest(layout, tag)
    layer = bundle_layer(manifest)
    data = read_blob(layout, layer["digest"])

    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    mode = "r:gz" if layer.get("mediaType", "").endswith("gzip") else "r:"
    prefix = PurePosixPath(BUNDLE_PATH_IN_IMAGE)
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as archive:
        for member in archive.getmembers():
            name = PurePosixPath(member.name.lstrip("./") or ".")
            if ".." in name.parts:
                raise BundleChecksumError(f"layer {layer['digest']} has unsafe path {member.name!r}")
            if not (member.isfile() or member.isdir()):
                raise BundleChecksumError(f"layer {layer['digest']} has non-regular entry {member.name!r}")
            if name == prefix or prefix in name.parents:
                archive.extract(member, destination, filter="data")
    bundle_dir = destination / BUNDLE_PATH_IN_IMAGE
    if not bundle_dir.is_dir():
        raise BundleNotFoundError(f"layer {layer['digest']} has no /{BUNDLE_PATH_IN_IMAGE}")
    logger.info("extracted bundle layer %s of %s into %s", layer["digest"], reference, bundle_dir)
    return bundle_dir
