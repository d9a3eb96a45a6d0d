"""The model bundle: the one directory that an image bakes and the S3 source downloads.

Layout::

    bundle.json        metadata (below), canonical JSON
    model.lgb          LightGBM model in LightGBM's own text format
    encoding.parquet   categorical encoding table (feature, value, count)
    compiled/...       optional compiled forms of the model, listed in bundle.json

``bundle.json`` contains the registered model name and version, the MLflow run id,
the git commit, the ordered features with dtypes, the encoding, library
versions, the training-data digest, metrics and the SHA-256 of every other
file. Because it lists every file's hash, the SHA-256 of ``bundle.json`` is the
bundle's digest. No wall-clock time is written, so baking the same model
version twice gives byte-identical bundles.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ctr_inference.contract import Feature
from ctr_inference.errors import (
    BundleChecksumError,
    BundleIncompatibleError,
    BundleNotFoundError,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_FILE = "bundle.json"
MODEL_FILE = "model.lgb"
ENCODING_FILE = "encoding.parquet"


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(data: dict) -> bytes:
    """Serialize metadata the same way every time: sorted keys, fixed separators."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=True) + "\n").encode()


def library_versions() -> dict[str, str]:
    """Return the versions of the libraries a bundle's model depends on."""
    import lightgbm
    import numpy
    import pyarrow

    return {
        "lightgbm": lightgbm.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


@dataclass
class Bundle:
    """A verified model bundle on local disk."""

    path: Path
    metadata: dict
    features: list[Feature] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.metadata["model"]["name"]

    @property
    def model_version(self) -> str:
        return str(self.metadata["model"]["version"])

    @property
    def run_id(self) -> str:
        return self.metadata["model"].get("run_id", "")

    @property
    def digest(self) -> str:
        """SHA-256 of ``bundle.json``, which covers every file through its hashes."""
        return sha256_file(self.path / METADATA_FILE)

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    def load_booster(self):
        """Load the LightGBM booster from the bundle's text model file."""
        import lightgbm

        return lightgbm.Booster(model_file=str(self.model_file))


def write_metadata(bundle_dir: Path, metadata: dict) -> str:
    """Hash every file in ``bundle_dir``, then write ``bundle.json`` atomically.

    ``metadata`` must not contain ``files``: that section is computed here.
    Returns the bundle digest.
    """
    bundle_dir = Path(bundle_dir)
    files = {}
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(bundle_dir).as_posix()
        if relative == METADATA_FILE:
            continue
        files[relative] = sha256_file(path)
    document = dict(metadata, format_version=FORMAT_VERSION, files=files)
    payload = canonical_json(document)

    handle, temporary = tempfile.mkstemp(dir=bundle_dir, prefix=".bundle-", suffix=".json")
    with os.fdopen(handle, "wb") as out:
        out.write(payload)
    os.chmod(temporary, 0o644)
    os.replace(temporary, bundle_dir / METADATA_FILE)
    return hashlib.sha256(payload).hexdigest()


def _check_compatible(metadata: dict, path: Path) -> None:
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleIncompatibleError(
            f"bundle {path} has format_version {version!r}, this runtime reads {FORMAT_VERSION}"
        )
    # Package metadata, because importing lightgbm takes seconds when scikit-learn and
    # pandas are installed, which it then imports. Without LightGBM this raises
    # PackageNotFoundError, a subclass of the ModuleNotFoundError that the import raised.
    installed_version = importlib.metadata.version("lightgbm")

    made_with = metadata.get("libraries", {}).get("lightgbm", "")
    if made_with.split(".")[0] != installed_version.split(".")[0]:
        raise BundleIncompatibleError(
            f"bundle {path} was made with LightGBM {made_with or 'unknown'}, "
            f"this runtime has LightGBM {installed_version}; rebake the model "
            "with a runtime of the same major version"
        )


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle directory.

    Every file listed in ``bundle.json`` must exist with the recorded SHA-256,
    and the bundle must be readable by this runtime's LightGBM.

    Raises:
        BundleNotFoundError: the directory, ``bundle.json`` or a listed file is missing.
        BundleChecksumError: a file's SHA-256 differs, or ``bundle.json`` is not valid JSON.
        BundleIncompatibleError: another bundle format or LightGBM major version.
    """
    path = Path(path)
    metadata_path = path / METADATA_FILE
    if not metadata_path.is_file():
        raise BundleNotFoundError(f"no model bundle at {path}: {METADATA_FILE} is missing")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleChecksumError(f"bundle metadata {metadata_path} is not valid JSON: {error}") from error

    _check_compatible(metadata, path)

    for relative, expected in sorted(metadata.get("files", {}).items()):
        file_path = path / relative
        if not file_path.is_file():
            raise BundleNotFoundError(f"bundle {path} is missing {relative}")
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleChecksumError(
                f"bundle file {file_path} has SHA-256 {actual}, bundle.json records {expected}"
            )
    if MODEL_FILE not in metadata.get("files", {}):
        raise BundleNotFoundError(f"bundle {path} lists no {MODEL_FILE}")

    features = [Feature.from_dict(item) for item in metadata.get("features", [])]
    if not features:
        raise BundleChecksumError(f"bundle {path} lists no features")
    logger.info(
        "loaded bundle %s: model %s version %s, %d features",
        path, metadata["model"]["name"], metadata["model"]["version"], len(features),
    )
    return Bundle(path=path, metadata=metadata, features=features)
