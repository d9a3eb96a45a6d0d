"""File operations of the feature job's driver, for local paths and for URIs.

Spark reads and writes through Hadoop's FileSystem API, so the job runs the
same on ``local[*]`` with local files and on a cluster with ``s3://`` (EMRFS)
or ``s3a://`` paths. The driver also lists, renames, reads and writes a few
files of its own (deterministic part names, the encoding table, the report).
``storage_for`` picks the implementation: a plain path uses the local file
system, and a URI (``file://``, ``s3://``, ``s3a://``, ``hdfs://``) goes through
the Hadoop FileSystem of the running Spark session, which has the cluster's
credentials and connectors.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def join(base: str | os.PathLike, *parts: str) -> str:
    """Join path segments with ``/`` for URIs and with the OS separator for local paths."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return str(Path(base, *parts))


class LocalStorage:
    """Driver-side file operations on local paths."""

    def list(self, directory: str, pattern: str = "*") -> list[str]:
        folder = Path(directory)
        if not folder.is_dir():
            return []
        return sorted(str(p) for p in folder.iterdir() if fnmatch.fnmatch(p.name, pattern))

    def is_dir(self, location: str) -> bool:
        return Path(location).is_dir()

    def exists(self, location: str) -> bool:
        return Path(location).exists()

    def rename(self, source: str, target: str) -> None:
        Path(source).rename(target)

    def delete(self, location: str) -> None:
        path = Path(location)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    def mkdirs(self, location: str) -> None:
        Path(location).mkdir(parents=True, exist_ok=True)

    def read_bytes(self, location: str) -> bytes:
        return Path(location).read_bytes()

    def write_bytes(self, location: str, data: bytes) -> None:
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(data)
        os.replace(temporary, path)


class HadoopStorage:
    """Driver-side file operations through the Spark session's Hadoop FileSystem."""

    def __init__(self, spark):
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _path(self, location: str):
        path = self._jvm.org.apache.hadoop.fs.Path(str(location))
        return path, path.getFileSystem(self._conf)

    def list(self, directory: str, pattern: str = "*") -> list[str]:
        path, fs = self._path(directory)
        if not fs.exists(path) or not fs.getFileStatus(path).isDirectory():
            return []
        names = [status.getPath().getName() for status in fs.listStatus(path)]
        return [join(directory, name) for name in sorted(names) if fnmatch.fnmatch(name, pattern)]

    def is_dir(self, location: str) -> bool:
        path, fs = self._path(location)
        return bool(fs.exists(path) and fs.getFileStatus(path).isDirectory())

    def exists(self, location: str) -> bool:
        path, fs = self._path(location)
        return bool(fs.exists(path))

    def rename(self, source: str, target: str) -> None:
        source_path, fs = self._path(source)
        target_path, _ = self._path(target)
        if not fs.rename(source_path, target_path):
            raise OSError(f"renaming {source} to {target} failed")

    def delete(self, location: str) -> None:
        path, fs = self._path(location)
        if fs.exists(path):
            fs.delete(path, True)

    def mkdirs(self, location: str) -> None:
        path, fs = self._path(location)
        fs.mkdirs(path)

    def read_bytes(self, location: str) -> bytes:
        path, fs = self._path(location)
        stream = fs.open(path)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write_bytes(self, location: str, data: bytes) -> None:
        path, fs = self._path(location)
        stream = fs.create(path, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()


def storage_for(location: str | os.PathLike, spark=None):
    """Return the storage that handles ``location``: local for a plain path, Hadoop for a URI.

    Raises:
        ValueError: ``location`` is a URI and no Spark session is given.
    """
    if not is_uri(location):
        return LocalStorage()
    if spark is None:
        raise ValueError(f"{location} is a URI; a Spark session is needed to reach it")
    return HadoopStorage(spark)
