"""The one bake code path: a registered MLflow model version becomes a model bundle and a model image.

``write_bundle`` assembles the bundle from ``models:/<name>/<version>`` (the
LightGBM text model) and the run's ``bundle/`` artifacts (feature list and
encoding table), and adds the compiled form of the model with its check rows
(``ctr_images.compiled_cache``). ``bake`` then builds
``model-images/model.Dockerfile`` with buildah on a base image (the runtime
image, or ``scratch``), writes the image into an OCI image layout tagged
``<model>-v<version>-<git short sha>`` with the model's facts as labels,
marks the bundle layer and checks the result. ``ctr image bake``, the demo and CI all call ``bake``.

Rebaking the same model version at the same commit on the same base gives
the same bundle layer digest, for three reasons. The bundle's files are
byte-identical, because no wall-clock time goes into them: the compiled
section of ``bundle.json`` leaves out the compile's timings and speeds, which
go into ``compile-report.json`` beside the bundle instead. The build context
has fixed file modes. buildah stamps every added file and the image with one
fixed time: the later of the version's registration and the commit.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ctr_inference.bundle import (
    ENCODING_FILE,
    MODEL_FILE,
    library_versions,
    sha256_file,
    write_metadata,
)
from ctr_inference.errors import BundleNotFoundError

from ctr_images import labels as oci_labels
from ctr_images import tools
from ctr_images.buildah import temporary_buildah
from ctr_images.compile import DEFAULT_TARGET
from ctr_images.errors import ImageContentError, ModelVersionNotFoundError
from ctr_images.oci_layout import ImageRef, annotate_bundle_layer
from ctr_images.registry import ResolvedImage, check_base_digest, resolve_image

logger = logging.getLogger(__name__)

DOCKERFILE = "model.Dockerfile"
# The base name that means "the runtime image of this checkout, built now or reused".
RUNTIME_BASE = "runtime"
FILE_MODE = 0o644
FOLDER_MODE = 0o755
# The compile's measurements and cache facts, written beside the bundle folder, not in it.
COMPILE_REPORT_FILE = "compile-report.json"


@dataclass(frozen=True)
class BakeResult:
    """A baked model: its bundle directory and digest, the image, and the bundle's metadata."""

    bundle_dir: Path
    bundle_digest: str
    image: ImageRef
    metadata: dict
    # The compile's measurements beside the bundle, None when the bake did not compile.
    compile_report: Path | None = None


def image_tag(model_name: str, version: str, git_commit: str) -> str:
    """Return the image tag ``<model>-v<version>-<git short sha>``."""
    return f"{model_name}-v{version}-{git_commit[:7]}"


def resolve_model_version(model_name: str, version: str):
    """Return the MLflow ``ModelVersion`` for a version number or an alias (``champion`` or ``@champion``).

    The tracking server comes from ``MLFLOW_TRACKING_URI``.

    Raises:
        ModelVersionNotFoundError: the registry has no such model, version or alias.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    version = str(version)
    try:
        if version.isdigit():
            return client.get_model_version(model_name, version)
        return client.get_model_version_by_alias(model_name, version.removeprefix("@"))
    except MlflowException as error:
        missing = f"version {version}" if version.isdigit() else f"alias {version.removeprefix('@')!r}"
        raise ModelVersionNotFoundError(
            f"model {model_name!r} has no {missing} in the MLflow registry at {mlflow.get_tracking_uri()}; "
            f"list the versions with `ctr models list --model-name {model_name}` or in the MLflow UI "
            "(`make mlflow-ui`)"
        ) from error


def write_bundle(model_name: str, version: str, bundle_dir: Path, *, compile_model: bool = True,
                 compile_target: str = DEFAULT_TARGET) -> dict:
    """Write the bundle of a registered model version into ``bundle_dir`` and return its metadata.

    With ``compile_model``, the bundle also gets check rows and the compiled
    form of the model for ``compile_target`` (see ``compile_report_path`` for
    the compile's measurements). A compiled form that did not match LightGBM
    is left out, and the bundle's worker scores with LightGBM.

    The tracking server comes from ``MLFLOW_TRACKING_URI``.

    Raises:
        ModelVersionNotFoundError: the registry has no such version.
        BundleNotFoundError: the run lacks the model file or the bundle artifacts.
        UnknownTargetError: ``compile_target`` is neither ``host`` nor a known x86-64 level.
    """
    import mlflow

    model_version = resolve_model_version(model_name, version)
    version = str(model_version.version)

    bundle_dir = Path(bundle_dir)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    bundle_dir.mkdir(parents=True)
    compile_report_path(bundle_dir).unlink(missing_ok=True)
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
        "model": {"name": model_name, "version": version, "run_id": model_version.run_id,
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
    if compile_model:
        metadata["compiled"] = _compile(bundle_dir, facts["features"], compile_target)
    write_metadata(bundle_dir, metadata)
    return json.loads((bundle_dir / "bundle.json").read_text())


def compile_report_path(bundle_dir: Path) -> Path:
    """Return where ``write_bundle`` writes the compile's measurements: beside the bundle folder."""
    return Path(bundle_dir).parent / COMPILE_REPORT_FILE


def _compile(bundle_dir: Path, features: list, target: str) -> dict:
    """Add the check rows and the compiled form to a bundle folder; return the section for bundle.json."""
    from ctr_images.compiled_cache import compile_cached

    # NOTE: the run logs no feature rows except MLflow's five-row input example, too few to
    # stand in for the 256 generated ordinary check rows, so no real rows are checked.
    form = compile_cached(bundle_dir, features, target=target)
    report = compile_report_path(bundle_dir)
    report.write_text(json.dumps(form.report(), indent=2, sort_keys=True) + "\n")
    if form.section["engine"]:
        logger.info("compiled form: %s for %s (%s), measurements in %s", form.section["engine"], target,
                    "reused from the cache" if form.cache_hit else "compiled now", report)
    else:
        outcomes = ", ".join(f"{c['engine']} {c['status']}" for c in form.section["candidates"]) or "no candidates"
        logger.warning("the bundle has no compiled form (%s), so its workers score with LightGBM; details in %s",
                       outcomes, report)
    return form.section


def _flavor_version(mlmodel: Path) -> str:
    """Return the LightGBM version recorded in an MLmodel file, or an empty string."""
    import yaml

    if not mlmodel.is_file():
        return ""
    document = yaml.safe_load(mlmodel.read_text())
    return str(document.get("flavors", {}).get("lightgbm", {}).get("lgb_version", ""))


def image_labels(metadata: dict, bundle_digest: str, platform_commit: str, created: str,
                 base: ResolvedImage | None = None, model_sha256: str = "") -> dict[str, str]:
    """Return the OCI labels that tell which model an image serves and what it was built from."""
    model = metadata["model"]
    labels = {
        oci_labels.REVISION: platform_commit,
        oci_labels.CREATED: created,
        oci_labels.SOURCE: oci_labels.source_url(),
        oci_labels.TITLE: f"{model['name']} model {model['version']}",
        oci_labels.MODEL_NAME: model["name"],
        oci_labels.MODEL_VERSION: str(model["version"]),
        oci_labels.MODEL_URI: f"models:/{model['name']}/{model['version']}",
        oci_labels.RUN_ID: model.get("run_id", ""),
        oci_labels.BUNDLE_SHA256: bundle_digest,
        oci_labels.MODEL_SHA256: model_sha256,
    }
    if base is not None:
        labels[oci_labels.BASE_NAME] = base.name
        if base.digest:
            labels[oci_labels.BASE_DIGEST] = base.digest
    return labels


def prepare_bundle_context(bundle_dir: Path, context: Path, mtime: int) -> None:
    """Copy a bundle into ``context/bundle`` with files 0644, folders 0755 and one modification time.

    Raises:
        ImageContentError: the bundle contains a symbolic link or a special file.
    """
    target_root = Path(context) / "bundle"
    target_root.mkdir(parents=True)
    for source in sorted(Path(bundle_dir).rglob("*")):
        target = target_root / source.relative_to(bundle_dir)
        if source.is_symlink() or not (source.is_file() or source.is_dir()):
            raise ImageContentError(f"bundle entry {source} is not a regular file or folder")
        if source.is_dir():
            target.mkdir()
        else:
            shutil.copyfile(source, target)
            os.chmod(target, FILE_MODE)
    for path in sorted(target_root.rglob("*"), reverse=True) + [target_root]:
        if path.is_dir():
            os.chmod(path, FOLDER_MODE)
        os.utime(path, (mtime, mtime))


def build_model_image(bundle_dir: Path, layout: Path, tag: str, labels: dict[str, str], base: ResolvedImage,
                      created: int) -> ImageRef:
    """Build the model image with buildah into ``layout`` as ``tag`` and mark its bundle layer.

    Raises:
        ToolError: buildah fails.
        ImageContentError: the new layer contains more than the bundle, or the base changed during the build.
    """
    layout = Path(layout).resolve()
    layout.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ctr-bake-") as scratch:
        context = Path(scratch) / "context"
        prepare_bundle_context(bundle_dir, context, created)
        name = f"localhost/ctr-bake:{tag}"
        with temporary_buildah() as buildah:
            from_reference, pull = buildah.use_base(base)
            buildah.build(tools.dockerfile(DOCKERFILE), context, name,
                          build_args={"RUNTIME_IMAGE": from_reference}, labels=labels,
                          annotations={oci_labels.BASE_NAME: base.name}, timestamp=created,
                          tls_verify=base.tls_verify, pull=pull)
            buildah.push(name, f"oci:{layout}:{tag}")
    check_base_digest(layout, tag, base)
    return annotate_bundle_layer(layout, tag)


def _registration_seconds(model_version) -> int:
    return int(model_version.creation_timestamp // 1000)


def bake(model_name: str, version: str, work_dir: Path, layout: Path, base: str | None = None, *,
         compile_model: bool = True, compile_target: str = DEFAULT_TARGET) -> BakeResult:
    """Write the bundle of a model version and build its image into ``layout``.

    ``version`` is a version number or an alias (``champion``). ``base`` is
    the runtime image (``oci:DIR:TAG`` or a registry reference). ``runtime``
    means the runtime image of this checkout, which ``build_runtime_image``
    builds on ``$BASE_IMAGE`` (or the debootstrap base) unless an image with
    the same inputs exists. None or ``scratch`` gives an image that contains
    the bundle alone. ``compile_model`` and ``compile_target`` are passed to
    ``write_bundle``.

    Raises:
        ModelVersionNotFoundError: the registry has no such version or alias.
        BundleError: the bundle cannot be written or does not verify.
        ImageError: the base image is missing, or buildah fails.
        UnknownTargetError: ``compile_target`` is neither ``host`` nor a known x86-64 level.
    """
    from ctr_inference.bundle import load_bundle

    from ctr_images.publish import verify_model_image

    model_version = resolve_model_version(model_name, version)
    version = str(model_version.version)
    if base == RUNTIME_BASE:
        from ctr_images.runtime_image import build_runtime_image

        base = build_runtime_image(base=os.environ.get("BASE_IMAGE") or None).reference
    resolved_base = resolve_image(base)

    bundle_dir = Path(work_dir) / f"{model_name}-v{version}" / "bundle"
    metadata = write_bundle(model_name, version, bundle_dir, compile_model=compile_model,
                            compile_target=compile_target)
    bundle = load_bundle(bundle_dir)

    commit = oci_labels.platform_commit()
    if oci_labels.uncommitted_changes():
        logger.warning("the checkout has uncommitted changes; the tag names commit %s, which lacks them", commit[:7])
    created = max(_registration_seconds(model_version), oci_labels.commit_time() or 0)
    labels = image_labels(metadata, bundle.digest, commit, oci_labels.rfc3339(created), resolved_base,
                          sha256_file(bundle.model_file))
    tag = image_tag(model_name, version, commit)

    image = build_model_image(bundle_dir, layout, tag, labels, resolved_base, created)
    verify_model_image(image.layout, image.tag)
    logger.info("baked %s version %s into %s (manifest %s, bundle %s) on %s", model_name, version, image,
                image.digest, bundle.digest[:12], resolved_base.name)
    report = compile_report_path(bundle_dir)
    return BakeResult(bundle_dir, bundle.digest, image, metadata, report if report.is_file() else None)
