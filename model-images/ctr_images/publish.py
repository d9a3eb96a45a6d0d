"""Check a baked model image, push it to a registry, record it on the model version, and describe images.

``push_model_image`` pushes nothing unless the image passes
``verify_model_image``: the bundle layer contains only the bundle, every file
matches the SHA-256 in ``bundle.json``, and the labels agree with the bundle
(digest of ``bundle.json``, SHA-256 of the model file, model name and
version). After the push it writes the image reference with its digest as
tags on the MLflow model version:

- ``ctr.image.reference``: ``HOST/REPOSITORY:TAG@sha256:...``
- ``ctr.image.digest``: ``sha256:...``
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctr_inference.bundle import Bundle, load_bundle, sha256_file
from ctr_inference.errors import BundleChecksumError
from ctr_inference.oci import bundle_layer as bundle_layer_descriptor
from ctr_inference.oci import extract_bundle, read_blob

from ctr_images import labels as oci_labels
from ctr_images.errors import ImageContentError, ImageError, ModelVersionNotFoundError
from ctr_images.oci_layout import (
    check_bundle_only,
    layer_members,
    read_config,
    read_manifest,
    select_tag,
)
from ctr_images.registry import (
    default_tls_verify,
    inspect,
    local_layout,
    parse_repository,
    push_layout,
)

logger = logging.getLogger(__name__)

TAG_REFERENCE = "ctr.image.reference"
TAG_DIGEST = "ctr.image.digest"


@dataclass(frozen=True)
class VerifiedImage:
    """A model image whose bundle layer and labels were checked."""

    layout: Path
    tag: str
    digest: str
    layer_digest: str
    labels: dict[str, str]
    facts: oci_labels.ModelFacts


@dataclass(frozen=True)
class PushedImage:
    """A model image in a registry: the reference with its digest, and the model it serves."""

    reference: str
    digest: str
    facts: oci_labels.ModelFacts


def _check_bundle_against_labels(bundle: Bundle, facts: oci_labels.ModelFacts, image: str) -> None:
    if bundle.digest != facts.bundle_sha256:
        raise BundleChecksumError(f"the bundle in {image} has bundle.json SHA-256 {bundle.digest}, "
                                  f"the label {oci_labels.BUNDLE_SHA256} records {facts.bundle_sha256}")
    model_sha256 = sha256_file(bundle.model_file)
    if model_sha256 != facts.model_sha256:
        raise BundleChecksumError(f"the model file in {image} has SHA-256 {model_sha256}, "
                                  f"the label {oci_labels.MODEL_SHA256} records {facts.model_sha256}")
    if (bundle.model_name, bundle.model_version) != (facts.model_name, facts.model_version):
        raise ImageContentError(f"{image} is labelled {facts.model_name} version {facts.model_version} but "
                                f"its bundle is {bundle.model_name} version {bundle.model_version}")


def verify_model_image(layout: Path, tag: str = "") -> VerifiedImage:
    """Check a model image in a layout: bundle layer content, bundle checksums, and labels.

    Raises:
        ImageNotFoundError: the layout or tag is missing.
        ImageContentError: model labels are missing, or the bundle layer contains more than the bundle.
        BundleChecksumError: a blob, a bundle file or a labelled digest does not match.
        BundleIncompatibleError: this machine's LightGBM cannot read the bundle.
    """
    layout = Path(layout)
    tag = select_tag(layout, tag)
    image = f"{layout}:{tag}"
    manifest, digest = read_manifest(layout, tag)
    labels = read_config(layout, manifest).get("config", {}).get("Labels") or {}
    facts = oci_labels.ModelFacts.from_labels(labels)
    if facts.missing():
        raise ImageContentError(f"{image} is not a model image: labels {', '.join(facts.missing())} are missing")

    layer = bundle_layer_descriptor(manifest)
    check_bundle_only(layer_members(read_blob(layout, layer["digest"]), layer.get("mediaType", "")), layer["digest"])
    with tempfile.TemporaryDirectory(prefix="ctr-verify-") as scratch:
        bundle = load_bundle(extract_bundle(image, Path(scratch)))
        _check_bundle_against_labels(bundle, facts, image)
    return VerifiedImage(layout, tag, digest, layer["digest"], labels, facts)


def check_registered(facts: oci_labels.ModelFacts) -> None:
    """Check that the MLflow registry has the image's model version, from the run the image names.

    Raises:
        ModelVersionNotFoundError: no such version, or it belongs to another run.
    """
    from ctr_images.bake import resolve_model_version

    model_version = resolve_model_version(facts.model_name, facts.model_version)
    if model_version.run_id != facts.run_id:
        raise ModelVersionNotFoundError(
            f"model {facts.model_name!r} version {facts.model_version} comes from run {model_version.run_id} "
            f"in this MLflow registry, but the image was baked from run {facts.run_id}; "
            "is MLFLOW_TRACKING_URI the registry the image was baked from?"
        )


def record_on_model_version(facts: oci_labels.ModelFacts, reference: str, digest: str) -> None:
    """Write the pushed image reference and digest as tags on the MLflow model version."""
    import mlflow

    client = mlflow.MlflowClient()
    client.set_model_version_tag(facts.model_name, facts.model_version, TAG_REFERENCE, reference)
    client.set_model_version_tag(facts.model_name, facts.model_version, TAG_DIGEST, digest)


def push_model_image(source: str, destination: str, *, record: bool = True,
                     tls_verify: bool | None = None) -> PushedImage:
    """Verify the model image ``source`` (a layout, ``DIR[:TAG]``) and push it to ``destination``.

    ``destination`` is ``HOST[:PORT]/REPOSITORY[:TAG]``; the tag defaults to
    the layout's tag. With ``record`` the model version must exist in the
    MLflow registry before anything is pushed, and gets the reference as tags
    after the push.

    Raises:
        ImageError: ``source`` is not a layout, or the destination is invalid.
        ImageContentError, BundleChecksumError: the image fails verification.
        ModelVersionNotFoundError: ``record`` is set and the model version is not registered.
        RegistryUnavailableError: no registry responds at the destination.
        ToolError: skopeo fails.
    """
    layout = local_layout(source)
    if layout is None:
        raise ImageError(f"{source} is not an OCI image layout; pass the folder that `ctr image bake --layout` wrote")
    folder, tag = layout
    verified = verify_model_image(folder, tag)
    repository, destination_tag = parse_repository(destination)
    tag = destination_tag or verified.tag
    tls = default_tls_verify(repository.host) if tls_verify is None else tls_verify
    if record:
        check_registered(verified.facts)

    digest = push_layout(folder, verified.tag, repository, tls_verify=tls, destination_tag=tag)
    if digest != verified.digest:
        raise ImageError(f"the registry stored {repository.reference(tag)} as {digest}, "
                         f"but the layout's manifest is {verified.digest}")
    reference = repository.reference(tag, digest)
    if record:
        record_on_model_version(verified.facts, reference, digest)
        logger.info("recorded %s on model %s version %s", reference, verified.facts.model_name,
                    verified.facts.model_version)
    return PushedImage(reference, digest, verified.facts)


def describe_image(reference: str, tls_verify: bool | None = None) -> dict:
    """Return the model facts of an image in a layout or a registry, read from its labels.

    Raises:
        ImageNotFoundError: the image does not exist or its registry does not respond.
        ImageContentError: the image has no model labels.
    """
    document = inspect(reference, tls_verify)
    labels = document.get("Labels") or {}
    facts = oci_labels.ModelFacts.from_labels(labels)
    if len(facts.missing()) == len(oci_labels.MODEL_LABELS):
        raise ImageContentError(f"{reference} has none of the model labels ({', '.join(oci_labels.MODEL_LABELS)}), "
                                "so it is not a model image")
    return {
        "image": reference,
        "digest": document.get("Digest", ""),
        "model": facts.model_name,
        "version": facts.model_version,
        "model_uri": facts.model_uri,
        "mlflow_run_id": facts.run_id,
        "bundle_sha256": facts.bundle_sha256,
        "model_sha256": facts.model_sha256,
        "revision": facts.revision,
        "created": facts.created,
        "source": facts.source,
        "base_image": facts.base_name,
        "base_digest": facts.base_digest,
    }
