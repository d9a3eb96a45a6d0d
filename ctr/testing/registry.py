"""A local OCI registry (Debian's ``docker-registry``) on 127.0.0.1, and a minimal image push.

``LocalRegistry`` starts the registry with its storage in a folder of the
caller's and stops it by PID. ``push_image`` uploads a small image (a config
with labels and one layer) through the distribution API, so tests can create
images that ``ctr deploy`` then finds, or deletes, without a container engine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

logger = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 now (another process may take it later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRegistry:
    """``docker-registry serve`` on 127.0.0.1:PORT with storage under ``folder``."""

    def __init__(self, folder: Path, port: int = 0, binary: str = "docker-registry"):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.binary = binary
        self._process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Self:
        """Start the registry and wait until ``/v2/`` responds.

        Raises:
            FileNotFoundError: the docker-registry binary is not installed.
            TimeoutError: the registry did not respond within ``timeout`` seconds.
        """
        if shutil.which(self.binary) is None:
            raise FileNotFoundError(f"{self.binary} is not installed; `make setup` installs the Debian "
                                    "package docker-registry")
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.folder / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: local-only\n"
        )
        log = (self.folder / "registry.log").open("ab")
        self._process = subprocess.Popen([self.binary, "serve", str(config)], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self._process.returncode}; see "
                                   f"{self.folder / 'registry.log'}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    logger.info("local registry listening on %s", self.host)
                    return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"docker-registry on {self.host} did not respond within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _put_blob(host: str, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = urllib.request.Request(f"http://{host}/v2/{repository}/blobs/uploads/", method="POST")
    with urllib.request.urlopen(start, timeout=10) as response:
        location = response.headers["Location"]
    if location.startswith("/"):
        location = f"http://{host}{location}"
    separator = "&" if "?" in location else "?"
    upload = urllib.request.Request(f"{location}{separator}digest={digest}", data=data, method="PUT",
                                    headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(upload, timeout=10):
        return digest


def push_image(host: str, repository: str, tag: str, labels: dict[str, str] | None = None) -> str:
    """Push a minimal linux/amd64 image with ``labels`` as ``host/repository:tag``; return its digest."""
    layer = tag.encode().ljust(1024, b"\0")  # one tar-sized block, distinct per tag
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Labels": labels or {}},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}},
                        sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _put_blob(host, repository, config),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": _put_blob(host, repository, layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag}", data=manifest,
                                     method="PUT", headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


def delete_image(host: str, repository: str, digest: str) -> None:
    """Delete a manifest by digest (the registry was started with deletes enabled)."""
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(request, timeout=10):
        pass


def main(argv: list[str] | None = None) -> int:
    """Serve a local registry until interrupted; print its host first."""
    import signal
    import threading

    parser = argparse.ArgumentParser(prog="python -m ctr.testing.registry",
                                     description="Serve Debian's docker-registry on 127.0.0.1.")
    parser.add_argument("folder", type=Path, help="folder for the registry's storage and log")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with LocalRegistry(args.folder, args.port) as registry:
        print(registry.host, flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
