"""Bake a registered model, push it to a real registry, and check what the registry serves.

"The bundle layer's SHA-256 equals the registered artifact's" is checked in
two parts. The SHA-256 of ``model.lgb`` extracted from the pushed bundle
layer equals the SHA-256 of ``model.lgb`` in the registered MLflow model
version (``models:/NAME/VERSION``). The label ``ai.ctr.bundle.sha256`` equals
the SHA-256 of the extracted ``bundle.json``, which lists every file's hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from ctr_images import labels
from ctr_images.bake import bake
from ctr_images.errors import ImageError, ModelVersionNotFoundError, RegistryUnavailableError
from ctr_images.publish import TAG_DIGEST, TAG_REFERENCE, push_model_image
from ctr_inference.errors import BundleChecksumError
from ctr_inference.oci import LAYER_ANNOTATION

from ctr.cli import main as ctr_main
from ctr.services import free_port
from tests.images.conftest import MODEL_NAME

pytestmark = pytest.mark.integration

REPOSITORY = "ctr-model"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def registered_model_file(name: str, version: str, destination: Path) -> bytes:
    import mlflow

    folder = mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(destination))
    return (Path(folder) / "model.lgb").read_bytes()


def layer_files(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def git_head() -> str:
    return labels.platform_commit()


@pytest.fixture(scope="module")
def baked(registered_model, stub_base, tmp_path_factory):
    layout, tag, _ = stub_base
    work = tmp_path_factory.mktemp("bake-first")
    return bake(registered_model.name, registered_model.version, work / "bundles", work / "layout",
                base=f"oci:{layout}:{tag}")


@pytest.fixture(scope="module")
def pushed(baked, registry):
    return push_model_image(str(baked.image.layout), f"{registry.host}/{REPOSITORY}")


def bundle_layer(manifest: dict) -> dict:
    annotated = [la for la in manifest["layers"] if la.get("annotations", {}).get(LAYER_ANNOTATION) == "bundle"]
    assert len(annotated) == 1, manifest["layers"]
    return annotated[0]


def test_push_keeps_the_layout_digest(baked, pushed, registry):
    expected_tag = f"{MODEL_NAME}-v{baked.metadata['model']['version']}-{git_head()[:7]}"

    assert baked.image.tag == expected_tag
    assert pushed.digest == baked.image.digest
    assert pushed.reference == f"{registry.host}/{REPOSITORY}:{expected_tag}@{baked.image.digest}"
    assert registry.tags(REPOSITORY) == [expected_tag]


def test_pulled_bundle_matches_registered_artifact(pushed, registry, registered_model, tmp_path):
    manifest, _ = registry.manifest(REPOSITORY, pushed.digest)
    layer = bundle_layer(manifest)
    files = layer_files(registry.blob(REPOSITORY, layer["digest"]))
    config = json.loads(registry.blob(REPOSITORY, manifest["config"]["digest"]))
    image_labels = config["config"]["Labels"]
    registered = registered_model_file(registered_model.name, registered_model.version, tmp_path)

    assert sorted(files) == ["opt/ctr/bundle/bundle.json", "opt/ctr/bundle/check_rows.parquet",
                             "opt/ctr/bundle/compiled/model.lleaves.o", "opt/ctr/bundle/encoding.parquet",
                             "opt/ctr/bundle/model.lgb"]
    assert sha256(files["opt/ctr/bundle/model.lgb"]) == sha256(registered)
    assert image_labels[labels.MODEL_SHA256] == sha256(registered)
    assert image_labels[labels.BUNDLE_SHA256] == sha256(files["opt/ctr/bundle/bundle.json"])
    bundle_json = json.loads(files["opt/ctr/bundle/bundle.json"])
    assert bundle_json["files"]["model.lgb"] == sha256(registered)


def test_every_label(baked, pushed, registry, registered_model, stub_base):
    manifest, _ = registry.manifest(REPOSITORY, pushed.digest)
    image_labels = json.loads(registry.blob(REPOSITORY, manifest["config"]["digest"]))["config"]["Labels"]
    _, stub_tag, stub_digest = stub_base
    version = registered_model.version

    assert image_labels[labels.REVISION] == git_head()
    assert image_labels[labels.SOURCE] == labels.source_url()
    assert image_labels[labels.BASE_DIGEST] == stub_digest
    assert image_labels[labels.BASE_NAME] == stub_tag
    assert image_labels[labels.MODEL_NAME] == registered_model.name
    assert image_labels[labels.MODEL_VERSION] == version
    assert image_labels[labels.MODEL_URI] == f"models:/{registered_model.name}/{version}"
    assert image_labels[labels.RUN_ID] == registered_model.run_id
    assert image_labels[labels.BUNDLE_SHA256] == baked.bundle_digest
    assert image_labels[labels.TITLE] == f"{registered_model.name} model {version}"


def test_created_label_is_fixed_time(baked, pushed, registry, registered_model):
    import mlflow

    model_version = mlflow.MlflowClient().get_model_version(registered_model.name, registered_model.version)
    expected = max(model_version.creation_timestamp // 1000, labels.commit_time() or 0)
    manifest, _ = registry.manifest(REPOSITORY, pushed.digest)
    config = json.loads(registry.blob(REPOSITORY, manifest["config"]["digest"]))

    assert config["config"]["Labels"][labels.CREATED] == labels.rfc3339(expected)
    assert config["created"] == labels.rfc3339(expected)


def test_push_records_reference_on_model_version(pushed, registered_model):
    import mlflow

    tags = mlflow.MlflowClient().get_model_version(registered_model.name, registered_model.version).tags

    assert tags[TAG_REFERENCE] == pushed.reference
    assert tags[TAG_DIGEST] == pushed.digest


def test_rebake_gives_identical_bundle_layer(pushed, registry, registered_model, stub_base, tmp_path):
    layout, tag, _ = stub_base
    again = bake(registered_model.name, registered_model.version, tmp_path / "bundles", tmp_path / "layout",
                 base=f"oci:{layout}:{tag}")
    manifest, _ = registry.manifest(REPOSITORY, pushed.digest)

    assert again.image.layer_digest == bundle_layer(manifest)["digest"]
    assert again.image.digest == pushed.digest


def test_bake_by_alias(registered_model, tmp_path):
    image = bake(registered_model.name, "champion", tmp_path / "bundles", tmp_path / "layout")

    assert image.metadata["model"]["version"] == registered_model.version


def test_show_prints_model_facts(pushed, registered_model, capsys):
    assert ctr_main(["image", "show", "--json", pushed.reference]) == 0
    facts = json.loads(capsys.readouterr().out)

    assert facts["model"] == registered_model.name
    assert facts["version"] == registered_model.version
    assert facts["mlflow_run_id"] == registered_model.run_id
    assert facts["digest"] == pushed.digest


def test_show_reads_a_layout(baked, registered_model, capsys):
    assert ctr_main(["image", "show", f"{baked.image.layout}:{baked.image.tag}"]) == 0
    output = capsys.readouterr().out

    assert f"model          {registered_model.name}" in output
    assert f"version        {registered_model.version}" in output


def test_show_rejects_unknown_image(registry, capsys):
    assert ctr_main(["image", "show", f"{registry.host}/{REPOSITORY}:no-such-tag"]) == 1
    assert "cannot read image" in capsys.readouterr().err


def test_cli_push_prints_reference_last(baked, registry, capsys):
    assert ctr_main(["image", "push", str(baked.image.layout), f"{registry.host}/cli-model"]) == 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]

    assert last_line == f"{registry.host}/cli-model:{baked.image.tag}@{baked.image.digest}"


def test_push_to_another_tag(baked, registry):
    pushed = push_model_image(str(baked.image.layout), f"{registry.host}/retagged:release-1", record=False)

    assert pushed.reference == f"{registry.host}/retagged:release-1@{baked.image.digest}"
    assert registry.tags("retagged") == ["release-1"]


def test_missing_model_version_bakes_nothing(registered_model, registry, tmp_path, capsys):
    layout = tmp_path / "layout"
    code = ctr_main(["image", "bake", registered_model.name, "999", "--layout", str(layout),
                     "--workdir", str(tmp_path / "bundles")])

    assert code == 1
    assert f"model '{registered_model.name}' has no version 999" in capsys.readouterr().err
    assert not (layout / "index.json").exists()
    with pytest.raises(ImageError, match="is not an OCI image layout"):
        push_model_image(str(layout), f"{registry.host}/missing-version")
    assert "missing-version" not in registry.repositories()


def test_unregistered_model_version_is_not_pushed(registered_model, registry, tmp_path):
    import mlflow

    client = mlflow.MlflowClient()
    name = "ctr-images-deleted"
    version = mlflow.register_model(f"runs:/{registered_model.run_id}/model", name).version
    baked = bake(name, version, tmp_path / "bundles", tmp_path / "layout")
    client.delete_model_version(name, version)

    with pytest.raises(ModelVersionNotFoundError, match=f"has no version {version}"):
        push_model_image(str(baked.image.layout), f"{registry.host}/deleted-version")
    assert "deleted-version" not in registry.repositories()


def test_missing_registry_is_a_clear_error(baked, registered_model):
    import mlflow

    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailableError, match=f"no image registry responds at http://{host}/v2/"):
        push_model_image(str(baked.image.layout), f"{host}/{REPOSITORY}")
    tags = mlflow.MlflowClient().get_model_version(registered_model.name, registered_model.version).tags
    assert host not in tags.get(TAG_REFERENCE, "")


def rewrite_bundle_layer(layout: Path, tag: str, change) -> None:
    """Repack the bundle layer with ``change(files)`` applied, fixing every digest so blobs stay consistent."""
    from ctr_images.oci_layout import read_manifest

    def write_blob(data: bytes) -> str:
        digest = sha256(data)
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}"

    manifest, _ = read_manifest(layout, tag)
    layer = manifest["layers"][-1]
    raw = gzip.decompress((layout / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes())
    output = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as source, tarfile.open(fileobj=output, mode="w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read() if member.isfile() else None
            if data is not None:
                data = change(member.name, data)
                member.size = len(data)
            target.addfile(member, io.BytesIO(data) if data is not None else None)
    tar_bytes = output.getvalue()
    compressed = gzip.compress(tar_bytes, mtime=0)
    layer.update(digest=write_blob(compressed), size=len(compressed))

    config = json.loads((layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).read_bytes())
    config["rootfs"]["diff_ids"][-1] = f"sha256:{sha256(tar_bytes)}"
    config_bytes = json.dumps(config).encode()
    manifest["config"].update(digest=write_blob(config_bytes), size=len(config_bytes))
    manifest_bytes = json.dumps(manifest).encode()
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest=write_blob(manifest_bytes), size=len(manifest_bytes))
    (layout / "index.json").write_text(json.dumps(index))


def test_bundle_failing_checksum_is_not_pushed(registered_model, registry, tmp_path):
    baked = bake(registered_model.name, registered_model.version, tmp_path / "bundles", tmp_path / "layout")

    def flip_model(name: str, data: bytes) -> bytes:
        return data.replace(b"tree", b"TREE", 1) if name.endswith("model.lgb") else data

    rewrite_bundle_layer(baked.image.layout, baked.image.tag, flip_model)

    with pytest.raises(BundleChecksumError, match="model.lgb has SHA-256"):
        push_model_image(str(baked.image.layout), f"{registry.host}/tampered")
    assert "tampered" not in registry.repositories()


def test_corrupted_layer_blob_is_not_pushed(registered_model, registry, tmp_path):
    baked = bake(registered_model.name, registered_model.version, tmp_path / "bundles", tmp_path / "layout")
    blob = baked.image.layout / "blobs" / "sha256" / baked.image.layer_digest.split(":")[1]
    blob.write_bytes(blob.read_bytes()[:-16])

    with pytest.raises(BundleChecksumError, match="has digest"):
        push_model_image(str(baked.image.layout), f"{registry.host}/corrupted")
    assert "corrupted" not in registry.repositories()
