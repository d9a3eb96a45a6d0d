"""Put the training pipeline's raw logs in place from a local copy, checked against their ``.dvc`` file.

``data/raw/<dataset>.dvc`` records the raw logs by DVC's content hash, and
``dvc pull`` restores them from a DVC remote. A clean clone has no remote
data, because the local remote ``dvc-remote/`` is not committed. When a
local file has the recorded content, ``place_raw_logs`` copies it to the
path the ``.dvc`` file names and compares DVC's hash of the result with the
recorded one, so ``dvc repro`` starts from the data that ``dvc.lock`` names.

``make train`` runs ``python -m ctr.raw_logs --sample FILE`` before
``dvc repro``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

RAW_DIR = Path("data/raw")
DIRECTORY_SUFFIX = ".dir"


class RawLogsError(CtrError):
    """The raw logs are missing and cannot be restored from the given file."""


@dataclass(frozen=True)
class DvcOutput:
    """The one output a ``.dvc`` file of ``dvc add`` records."""

    path: Path
    md5: str

    @property
    def is_directory(self) -> bool:
        return self.md5.endswith(DIRECTORY_SUFFIX)


def read_dvc_file(dvc_file: Path) -> DvcOutput:
    """Read the output of a ``.dvc`` file, with its path resolved against the file's folder.

    Raises:
        RawLogsError: the file is missing or does not record exactly one output with an md5.
    """
    if not dvc_file.is_file():
        raise RawLogsError(f"DVC file {dvc_file} does not exist")
    document = yaml.safe_load(dvc_file.read_text()) or {}
    outs = document.get("outs") or []
    if len(outs) != 1 or not outs[0].get("md5") or not outs[0].get("path"):
        raise RawLogsError(f"DVC file {dvc_file} does not record exactly one output with path and md5")
    return DvcOutput(dvc_file.parent / outs[0]["path"], outs[0]["md5"])


def file_md5(path: Path) -> str:
    """Return the MD5 of a file's bytes, as DVC 3 records it (``hash: md5``)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_md5(folder: Path) -> str:
    """Return DVC 3's hash of a folder: the MD5 of its sorted JSON file list, plus ``.dir``.

    The list contains one ``{"md5", "relpath"}`` entry per file, sorted by
    relative path and serialized with ``json.dumps(..., sort_keys=True)``.
    This matches the hashes that ``dvc add`` wrote with DVC 3.67.
    """
    entries = [{"md5": file_md5(path), "relpath": path.relative_to(folder).as_posix()}
               for path in sorted(folder.rglob("*")) if path.is_file()]
    entries.sort(key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + DIRECTORY_SUFFIX


def _present(path: Path) -> bool:
    if path.is_dir():
        return any(child.is_file() for child in path.rglob("*"))
    return path.is_file()


def place_raw_logs(dvc_file: Path, sample: Path) -> bool:
    """Copy ``sample`` to the output of ``dvc_file`` when that output is missing, and check its hash.

    A folder output receives the file under its own name. Logs that are
    already in place are left alone: ``dvc repro`` compares them with
    ``dvc.lock`` itself. Returns True when the logs were copied.

    Raises:
        RawLogsError: ``sample`` does not exist, or its copy does not match the hash in ``dvc_file``.
    """
    output = read_dvc_file(dvc_file)
    if _present(output.path):
        logger.info("raw logs %s are in place", output.path)
        return False
    if not sample.is_file():
        raise RawLogsError(
            f"raw logs {output.path} are missing and {sample} does not exist: restore them with "
            f"`dvc pull {dvc_file}` from a DVC remote that has them, or copy logs into {output.path} "
            f"and record them with `dvc add {output.path}`")

    # Copy next to the target and rename once the hash matches, so a failed check leaves nothing behind.
    staging = output.path.with_name(f".{output.path.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.unlink(missing_ok=True)
    if output.is_directory:
        staging.mkdir(parents=True)
        shutil.copyfile(sample, staging / sample.name)
        found = directory_md5(staging)
    else:
        staging.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sample, staging)
        found = file_md5(staging)
    if found != output.md5:
        if staging.is_dir():
            shutil.rmtree(staging)
        else:
            staging.unlink()
        raise RawLogsError(
            f"{sample} does not match {dvc_file}: copied as {output.path}, it hashes to {found}, but the DVC "
            f"file records {output.md5}; restore the recorded logs with `dvc pull {dvc_file}`")
    shutil.rmtree(output.path, ignore_errors=True)
    os.replace(staging, output.path)
    logger.info("copied %s to %s; its hash %s matches %s", sample, output.path, found, dvc_file)
    return True


def dataset_dvc_file(root: Path) -> Path:
    """Return ``data/raw/<dataset>.dvc`` for the dataset that ``params.yaml`` selects."""
    params_file = root / "params.yaml"
    params = yaml.safe_load(params_file.read_text()) if params_file.is_file() else {}
    return root / RAW_DIR / f"{(params or {}).get('dataset', 'criteo')}.dvc"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ctr.raw_logs",
        description="Copy a local file to the raw logs a .dvc file records, when they are missing, and "
                    "check it against the recorded hash.")
    parser.add_argument("--sample", type=Path, required=True,
                        help="local file with the recorded content, such as a copy of the dataset's logs")
    parser.add_argument("--dvc-file", type=Path,
                        help="DVC file of the raw logs (default: data/raw/<dataset>.dvc, the dataset that "
                             "params.yaml selects)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="ctr.raw_logs: %(message)s")

    dvc_file = args.dvc_file or dataset_dvc_file(Path.cwd())
    if not dvc_file.is_file():
        logger.info("no DVC file %s, so there are no recorded raw logs to put in place", dvc_file)
        return 0
    try:
        place_raw_logs(dvc_file, args.sample)
    except RawLogsError as error:
        print(f"ctr.raw_logs: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
