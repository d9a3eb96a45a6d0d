"""Write OCI image layouts without a container engine.

The model image is the runtime image (or ``scratch``) plus one layer that
holds the model bundle at ``/opt/ctr/bundle``. The layer is reproducible:
entries in name order, owner root, modes 0644 and 0755, timestamps fixed to
``SOURCE_DATE_EPOCH`` semantics (0 unless given), gzip header without a name
or time. So baking the same bundle twice gives the same layer digest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ctr_inference.errors import BundleNotFoundError
from ctr_inference.oci import BUNDLE_PATH_IN_IMAGE, LAYER_ANNOTATION, REF_NAME, read_blob, resolve_manifest

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
WORKER_ENTRYPOINT = ["/opt/ctr/venv/bin/ctr-worker"]


@dataclass(frozen=True)
class ImageRef:
    """An image in a layout: where, which tag, and the manifest digest."""

    layout: Path
    tag: str
    digest: str
    layer_digest: str

    def __str__(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def bundle_layer(bundle_dir: Path, mtime: int = 0) -> tuple[bytes, str]:
    """Pack a bundle directory into a reproducible gzipped tar layer.

    Returns the compressed layer and the SHA-256 of the uncompressed tar (the diff id).
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        parts = BUNDLE_PATH_IN_IMAGE.split("/")
        for depth in range(1, len(parts) + 1):
            _add_directory(archive, "/".join(parts[:depth]), mtime)
        for path in sorted(Path(bundle_dir).rglob("*")):
            name = f"{BUNDLE_PATH_IN_IMAGE}/{path.relative_to(bundle_dir).as_posix()}"
            if path.is_dir():
                _add_directory(archive, name, mtime)
            elif path.is_file():
                info = tarfile.TarInfo(name)
                info.size = path.stat().st_size
                info.mode, info.mtime, info.uid, info.gid = 0o644, mtime, 0, 0
                info.uname = info.gname = "root"
                with open(path, "rb") as handle:
                    archive.addfile(info, handle)
    tar_bytes = raw.getvalue()
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=6) as out:
        out.write(tar_bytes)
    return compressed.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def _add_directory(archive: tarfile.TarFile, name: str, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode, info.mtime, info.uid, info.gid = 0o755, mtime, 0, 0
    info.uname = info.gname = "root"
    archive.addfile(info)


def _write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return f"sha256:{digest}"


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def write_model_image(
    layout: Path, tag: str, bundle_dir: Path, labels: dict[str, str], *,
    base: tuple[Path, str] | None = None, created: str = "1970-01-01T00:00:00Z",
) -> ImageRef:
    """Add an image with the bundle layer on top of ``base`` (or ``scratch``) to ``layout``.

    ``base`` is ``(layout_dir, tag)`` of a runtime image layout. The tag is
    replaced if it already exists in the layout's index.

    Raises:
        BundleNotFoundError: the bundle directory or the base image is missing.
    """
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / "bundle.json").is_file():
        raise BundleNotFoundError(f"no model bundle at {bundle_dir}")
    layout = Path(layout)
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    layers, diff_ids, config_body, history = [], [], {}, []
    if base is not None:
        base_layout, base_tag = base
        base_manifest = resolve_manifest(Path(base_layout), base_tag)
        base_config = json.loads(read_blob(Path(base_layout), base_manifest["config"]["digest"]))
        for layer in base_manifest["layers"]:
            _write_blob(layout, read_blob(Path(base_layout), layer["digest"]))
            layers.append({k: v for k, v in layer.items() if k != "annotations"})
        diff_ids = list(base_config.get("rootfs", {}).get("diff_ids", []))
        config_body = dict(base_config.get("config", {}))
        history = list(base_config.get("history", []))

    compressed, diff_id = bundle_layer(bundle_dir)
    layer_digest = _write_blob(layout, compressed)
    layers.append({"mediaType": LAYER_TYPE, "digest": layer_digest, "size": len(compressed),
                   "annotations": {LAYER_ANNOTATION: "bundle"}})
    diff_ids.append(diff_id)
    history.append({"created": created, "created_by": f"ctr image bake: model bundle at /{BUNDLE_PATH_IN_IMAGE}"})

    config_body["Labels"] = dict(config_body.get("Labels", {}), **labels)
    config_body.setdefault("Entrypoint", WORKER_ENTRYPOINT)
    env = [e for e in config_body.get("Env", []) if not e.startswith(("MODEL_SOURCE=", "BUNDLE_PATH="))]
    config_body["Env"] = env + ["MODEL_SOURCE=baked", f"BUNDLE_PATH=/{BUNDLE_PATH_IN_IMAGE}"]
    config = {"architecture": "amd64", "os": "linux", "created": created, "config": config_body,
              "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}
    config_bytes = _canonical(config)
    config_digest = _write_blob(layout, config_bytes)

    manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": len(config_bytes)},
                "layers": layers, "annotations": dict(labels)}
    manifest_bytes = _canonical(manifest)
    manifest_digest = _write_blob(layout, manifest_bytes)

    index_path = layout / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index.get("manifests", [])
                          if m.get("annotations", {}).get(REF_NAME) != tag]
    index["manifests"].append({"mediaType": MANIFEST_TYPE, "digest": manifest_digest,
                               "size": len(manifest_bytes), "annotations": {REF_NAME: tag}})
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True))
    return ImageRef(layout, tag, manifest_digest, layer_digest)
