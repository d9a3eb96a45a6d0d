"""Read OCI image layouts and mark the bundle layer of a model image.

buildah writes the model image into an image layout (``oci-layout``,
``index.json``, ``blobs/sha256/...``). The bake then annotates the image's
last layer with ``ai.ctr.layer=bundle``, after checking that this layer contains
nothing but ``/opt/ctr/bundle``, so readers find the bundle by annotation
and not by position. Adding the annotation rewrites the manifest, and the new
manifest digest is the image's digest from then on.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ctr_inference.oci import BUNDLE_PATH_IN_IMAGE, LAYER_ANNOTATION, REF_NAME, read_blob

from ctr_images.errors import ImageContentError, ImageNotFoundError

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
WHITEOUT_PREFIX = ".wh."


@dataclass(frozen=True)
class ImageRef:
    """An image in a layout: the folder, its tag, the manifest digest and the bundle layer's digest."""

    layout: Path
    tag: str
    digest: str
    layer_digest: str

    def __str__(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def read_index(layout: Path) -> dict:
    """Return a layout's ``index.json``.

    Raises:
        ImageNotFoundError: the folder is not an image layout.
    """
    path = Path(layout) / "index.json"
    if not path.is_file():
        raise ImageNotFoundError(f"no OCI image layout at {layout}: index.json is missing")
    return json.loads(path.read_text())


def layout_tags(layout: Path) -> list[str]:
    """Return the tags of the images in a layout, sorted."""
    return sorted(d.get("annotations", {}).get(REF_NAME, "") for d in read_index(layout).get("manifests", []))


def select_tag(layout: Path, tag: str = "") -> str:
    """Return ``tag`` if the layout has it, or the only tag of a one-image layout when ``tag`` is empty.

    Raises:
        ImageNotFoundError: the tag is missing, or ``tag`` is empty and the layout contains zero or several images.
    """
    tags = layout_tags(layout)
    if tag:
        if tag not in tags:
            raise ImageNotFoundError(f"image layout {layout} has no tag {tag!r} (tags: {', '.join(tags) or 'none'})")
        return tag
    if len(tags) != 1:
        raise ImageNotFoundError(f"image layout {layout} contains {len(tags)} images "
                                 f"({', '.join(tags) or 'none'}); name one as {layout}:TAG")
    return tags[0]


def _descriptor(layout: Path, tag: str) -> dict:
    for descriptor in read_index(layout).get("manifests", []):
        if descriptor.get("annotations", {}).get(REF_NAME) == tag:
            return descriptor
    raise ImageNotFoundError(f"image layout {layout} has no tag {tag!r}")


def read_manifest(layout: Path, tag: str) -> tuple[dict, str]:
    """Return the manifest that ``tag`` names and its digest; the blob is checked against the digest."""
    descriptor = _descriptor(Path(layout), tag)
    return json.loads(read_blob(Path(layout), descriptor["digest"])), descriptor["digest"]


def read_config(layout: Path, manifest: dict) -> dict:
    """Return the image configuration (labels, environment, entrypoint, layer diff ids) of a manifest."""
    return json.loads(read_blob(Path(layout), manifest["config"]["digest"]))


def layer_members(data: bytes, media_type: str) -> list[tarfile.TarInfo]:
    """List the entries of a layer blob (gzip-compressed or plain tar)."""
    mode = "r:gz" if media_type.endswith("gzip") else "r:"
    with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as archive:
        return archive.getmembers()


def check_bundle_only(members: list[tarfile.TarInfo], layer_digest: str) -> None:
    """Check that a layer contains ``/opt/ctr/bundle`` (and its parent folders) and nothing else.

    Raises:
        ImageContentError: an entry lies outside the bundle path, deletes a file,
            or is neither a regular file nor a folder.
    """
    bundle = PurePosixPath(BUNDLE_PATH_IN_IMAGE)
    allowed_parents = {str(p) for p in bundle.parents if str(p) != "."}
    for member in members:
        name = PurePosixPath(member.name.lstrip("./") or ".")
        if name.name.startswith(WHITEOUT_PREFIX):
            raise ImageContentError(f"layer {layer_digest} deletes {name} from the base image; "
                                    "the bundle layer may only add files")
        inside = name == bundle or bundle in name.parents
        if not inside and not (str(name) in allowed_parents and member.isdir()):
            raise ImageContentError(
                f"layer {layer_digest} has {name}, which lies outside /{BUNDLE_PATH_IN_IMAGE}; "
                "the model Dockerfile must add the bundle as its last and only layer"
            )
        if not (member.isfile() or member.isdir()):
            raise ImageContentError(f"layer {layer_digest} has {name}, which is not a regular file or folder")


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    if not path.exists():
        _write_atomically(path, data)
    return f"sha256:{digest}"


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def annotate_bundle_layer(layout: Path, tag: str) -> ImageRef:
    """Mark the last layer of image ``tag`` as the bundle layer and return the image.

    The manifest is rewritten with the layer annotation, and the index entry
    of ``tag`` then points to the new manifest. The old manifest blob is
    deleted when no other tag uses it. Annotating an annotated image changes
    nothing.

    Raises:
        ImageNotFoundError: the layout or tag is missing.
        ImageContentError: the image has no layers, or its last layer contains more than the bundle.
        BundleChecksumError: a blob does not match its digest.
    """
    layout = Path(layout)
    manifest, old_digest = read_manifest(layout, tag)
    layers = manifest.get("layers", [])
    if not layers:
        raise ImageContentError(f"image {layout}:{tag} has no layers, so it has no model bundle")
    last = layers[-1]
    check_bundle_only(layer_members(read_blob(layout, last["digest"]), last.get("mediaType", "")), last["digest"])

    for layer in layers[:-1]:
        layer.get("annotations", {}).pop(LAYER_ANNOTATION, None)
        if "annotations" in layer and not layer["annotations"]:
            del layer["annotations"]
    last["annotations"] = dict(last.get("annotations", {}), **{LAYER_ANNOTATION: "bundle"})
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    new_digest = _write_blob(layout, manifest_bytes)

    index = read_index(layout)
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get(REF_NAME) == tag:
            descriptor.update(mediaType=MANIFEST_TYPE, digest=new_digest, size=len(manifest_bytes))
    _write_atomically(layout / "index.json", json.dumps(index, indent=2, sort_keys=True).encode())

    still_used = any(d["digest"] == old_digest for d in index["manifests"])
    if old_digest != new_digest and not still_used:
        (layout / "blobs" / "sha256" / old_digest.split(":", 1)[1]).unlink(missing_ok=True)
    return ImageRef(layout, tag, new_digest, last["digest"])


def image_ref(layout: Path, tag: str) -> ImageRef:
    """Return the ``ImageRef`` of an image in a layout; its bundle layer is the annotated or last layer."""
    manifest, digest = read_manifest(Path(layout), tag)
    layers = manifest.get("layers", [])
    if not layers:
        raise ImageContentError(f"image {layout}:{tag} has no layers, so it has no model bundle")
    bundle = next((la for la in layers if la.get("annotations", {}).get(LAYER_ANNOTATION) == "bundle"), layers[-1])
    return ImageRef(Path(layout), tag, digest, bundle["digest"])
