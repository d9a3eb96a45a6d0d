"""The one bake code path: a registered MLflow model version becomes a model bundle and an image.

``write_bundle`` assembles the bundle from ``models:/<name>/<version>`` (the
LightGBM text model) and the run's ``bundle/`` artifacts (feature list and
encoding table). ``bake`` then packs that bundle into an OCI image layout,
tagged ``<model>-v<version>-<git short sha>`` and labelled with the model's
facts.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctr_inference.bundle import ENCODING_FILE, MODEL_FILE, library_versions, write_metadata
from ctr_inference.errors import BundleNotFoundError, CtrError

from ctr_images.oci_layout import ImageRef, write_model_image

logger = logging.getLogger(__name__)

SOURCE_URL = "https://example.invalid/ctr-platform"
LABEL_PREFIX = "ai.ctr"


class ModelVersionNotFoundError(CtrError):
    """The registry has no such model version."""


@dataclass(frozen=True)
class BakeResult:
    """A baked model: its bundle directory, digest and image."""

    bundle_dir: Path
    bundle_digest: str
    image: ImageRef
    metadata: dict


def image_tag(model_name: str, version: str, git_commit: str) -> str:
    """Return the image tag ``<model>-v<version>-<git short sha>``."""
    return f"{model_name}-v{version}-{git_commit[:7]}"


def source_git_commit(directory: Path | None = None) -> str:
    """Return the platform's checked-out commit (the code that bakes and serves), or ``unknown``."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory or Path(__file__).parent,
                              check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_bundle(model_name: str, version: str, bundle_dir: Path) -> dict:
    """Write the bundle of a registered model version into ``bundle_dir`` and return its metadata.

    The tracking server comes from ``MLFLOW_TRACKING_URI``.

    Raises:
        ModelVersionNotFoundError: the registry has no such version.
        BundleNotFoundError: the run lacks the model file or the bundle artifacts.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        model_version = client.get_model_version(model_name, str(version))
    except MlflowException as error:
        raise ModelVersionNotFoundError(
            f"model {model_name!r} version {version} is not registered at {mlflow.get_tracking_uri()}"
        ) from error

    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{model_name}/{version}",
                                                            dst_path=f"{scratch}/model"))
        extras = Path(mlflow.artifacts.download_artifacts(run_id=model_version.run_id,
                                                         artifact_path="bundle", dst_path=f"{scratch}/run"))
        for source, target in ((model_dir / MODEL_FILE, MODEL_FILE), (extras / ENCODING_FILE, ENCODING_FILE)):
            if not source.is_file():
                raise BundleNotFoundError(f"model {model_name} version {version} has no {source.name}")
            shutil.copyfile(source, bundle_dir / target)
        facts = json.loads((extras / "features.json").read_text())
        lgb_version = _flavor_version(model_dir / "MLmodel")

    libraries = dict(library_versions(), **({"lightgbm": lgb_version} if lgb_version else {}))
    metadata = {
        "model": {"name": model_name, "version": str(version), "run_id": model_version.run_id,
                  "source": f"models:/{model_name}/{version}"},
        "git_commit": facts.get("git_commit", "unknown"),
        "features": facts["features"],
        "encoding": {"kind": "frequency", "file": ENCODING_FILE,
                     "unseen": 0, "missing": "null"},
        "libraries": libraries,
        "training_data": facts.get("training_data", {}),
        "metrics": facts.get("metrics", {}),
    }
    if "sampling" in facts:
        # The scorer corrects predictions of models trained on downsampled negatives.
        metadata["sampling"] = facts["sampling"]
    write_metadata(bundle_dir, metadata)
    return json.loads((bundle_dir / "bundle.json").read_text())


def _flavor_version(mlmodel: Path) -> str:
    """Return the LightGBM version recorded in an MLmodel file, or an empty string."""
    import yaml

    if not mlmodel.is_file():
        return ""
    document = yaml.safe_load(mlmodel.read_text())
    return str(document.get("flavors", {}).get("lightgbm", {}).get("lgb_version", ""))


def image_labels(metadata: dict, bundle_digest: str, platform_commit: str, created: str) -> dict[str, str]:
    """OCI labels that tell which model an image serves."""
    model = metadata["model"]
    return {
        "org.opencontainers.image.revision": platform_commit,
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.title": f"{model['name']} model {model['version']}",
        f"{LABEL_PREFIX}.model.name": model["name"],
        f"{LABEL_PREFIX}.model.version": str(model["version"]),
        f"{LABEL_PREFIX}.mlflow.run_id": model.get("run_id", ""),
        f"{LABEL_PREFIX}.bundle.sha256": bundle_digest,
    }


def bake(model_name: str, version: str, work_dir: Path, layout: Path,
         base: tuple[Path, str] | None = None) -> BakeResult:
    """Write the bundle of a model version and pack it into an image in ``layout``."""
    from ctr_inference.bundle import load_bundle

    bundle_dir = Path(work_dir) / f"{model_name}-v{version}" / "bundle"
    metadata = write_bundle(model_name, version, bundle_dir)
    bundle = load_bundle(bundle_dir)
    commit = source_git_commit()
    created = _registration_time(model_name, version)
    labels = image_labels(metadata, bundle.digest, commit, created)
    image = write_model_image(layout, image_tag(model_name, str(version), commit), bundle_dir, labels,
                              base=base, created=created)
    logger.info("baked %s version %s into %s (manifest %s, bundle %s)", model_name, version, image,
                image.digest, bundle.digest[:12])
    return BakeResult(bundle_dir, bundle.digest, image, metadata)


def _registration_time(model_name: str, version: str) -> str:
    """The model version's registration time: a creation date that is the same on every rebake."""
    import datetime

    import mlflow

    millis = mlflow.MlflowClient().get_model_version(model_name, str(version)).creation_timestamp
    return datetime.datetime.fromtimestamp(millis / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
