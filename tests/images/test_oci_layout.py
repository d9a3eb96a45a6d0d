"""The model image build on scratch: reproducible bundle layers, the layer annotation, verified extraction."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest
from ctr_images.bake import build_model_image
from ctr_images.buildah import temporary_buildah
from ctr_images.errors import ImageContentError, ImageNotFoundError
from ctr_images.oci_layout import annotate_bundle_layer, read_config, read_manifest, select_tag
from ctr_images.registry import resolve_image
from ctr_inference.bundle import load_bundle
from ctr_inference.errors import BundleChecksumError, BundleNotFoundError
from ctr_inference.oci import LAYER_ANNOTATION, extract_bundle

from tests.helpers import write_tiny_bundle

CREATED = 1_700_000_000
LABELS = {"ai.ctr.model.version": "1"}


def build(tmp_path, name="layout", tag="m-v1-abc1234", bundle=None):
    bundle = bundle or write_tiny_bundle(tmp_path / "bundle")
    return build_model_image(bundle, tmp_path / name, tag, LABELS, resolve_image(None), CREATED)


def bundle_layer_members(image):
    manifest, _ = read_manifest(image.layout, image.tag)
    layer = manifest["layers"][-1]
    data = (image.layout / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as archive:
        return archive.getmembers()


def test_rebuild_gives_identical_digests(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    first = build(tmp_path, "one", bundle=bundle)
    second = build(tmp_path, "two", bundle=bundle)

    assert first.layer_digest == second.layer_digest
    assert first.digest == second.digest


def test_bundle_layer_entries_are_fixed(tmp_path):
    image = build(tmp_path)
    members = bundle_layer_members(image)
    names = [m.name.rstrip("/") for m in members]

    assert names == sorted(names)
    assert "opt/ctr/bundle/model.lgb" in names
    assert "opt/ctr/bundle/bundle.json" in names
    for member in members:
        assert member.mtime == CREATED, member.name
        assert (member.uid, member.gid) == (0, 0), member.name
        assert member.mode & 0o777 == (0o755 if member.isdir() else 0o644), member.name


def test_bundle_layer_is_annotated(tmp_path):
    image = build(tmp_path)
    manifest, digest = read_manifest(image.layout, image.tag)

    assert digest == image.digest
    assert len(manifest["layers"]) == 1
    assert manifest["layers"][0]["annotations"][LAYER_ANNOTATION] == "bundle"
    assert manifest["layers"][0]["digest"] == image.layer_digest


def test_config_has_labels_env_entrypoint(tmp_path):
    image = build(tmp_path)
    manifest, _ = read_manifest(image.layout, image.tag)
    config = read_config(image.layout, manifest)

    assert config["config"]["Labels"]["ai.ctr.model.version"] == "1"
    assert "MODEL_SOURCE=baked" in config["config"]["Env"]
    assert "BUNDLE_PATH=/opt/ctr/bundle" in config["config"]["Env"]
    assert config["config"]["Entrypoint"] == ["/opt/ctr/venv/bin/ctr-worker"]
    assert config["created"] == "2023-11-14T22:13:20Z"


def test_extracted_bundle_verifies(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    image = build(tmp_path, bundle=bundle)
    extracted = extract_bundle(f"{image.layout}:{image.tag}", tmp_path / "out")

    assert load_bundle(extracted).digest == load_bundle(bundle).digest


def test_annotating_twice_changes_nothing(tmp_path):
    image = build(tmp_path)
    again = annotate_bundle_layer(image.layout, image.tag)

    assert again == image


def test_tampered_layer_is_rejected(tmp_path):
    image = build(tmp_path)
    blob = image.layout / "blobs" / "sha256" / image.layer_digest.split(":")[1]
    blob.write_bytes(blob.read_bytes()[:-10])

    with pytest.raises(BundleChecksumError, match="has digest"):
        extract_bundle(f"{image.layout}:{image.tag}", tmp_path / "out")


def test_unknown_tag_lists_known_tags(tmp_path):
    image = build(tmp_path)

    with pytest.raises(BundleNotFoundError, match="m-v1-abc1234"):
        extract_bundle(f"{image.layout}:nope", tmp_path / "out")
    with pytest.raises(ImageNotFoundError, match="m-v1-abc1234"):
        select_tag(image.layout, "nope")


def test_select_tag_needs_a_tag_for_two_images(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    build(tmp_path, tag="m-v1-abc1234", bundle=bundle)
    build(tmp_path, tag="m-v2-abc1234", bundle=bundle)

    with pytest.raises(ImageNotFoundError, match="contains 2 images"):
        select_tag(tmp_path / "layout")
    assert select_tag(tmp_path / "layout", "m-v2-abc1234") == "m-v2-abc1234"


def test_layer_outside_bundle_is_rejected(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "extra").write_text("not part of a bundle\n")
    (context / "Containerfile").write_text("FROM scratch\nCOPY extra /etc/extra\n")
    with temporary_buildah() as buildah:
        buildah.build(context / "Containerfile", context, "localhost/not-a-model:1", timestamp=0)
        buildah.push("localhost/not-a-model:1", f"oci:{tmp_path / 'layout'}:not-a-model")

    with pytest.raises(ImageContentError, match="outside /opt/ctr/bundle"):
        annotate_bundle_layer(tmp_path / "layout", "not-a-model")
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert "annotations" not in read_manifest(tmp_path / "layout", "not-a-model")[0]["layers"][0]
    assert len(index["manifests"]) == 1
