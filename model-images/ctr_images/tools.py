"""Run the command-line tools behind the image steps and find the files they need.

Every external command (buildah, skopeo, debootstrap, pip, uv, apt-get) goes
through ``run``, so a missing tool and a failing tool both end in one
specific error that names the command and shows the end of its output.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from ctr_images.errors import ImageError, ToolError, ToolNotFoundError

logger = logging.getLogger(__name__)

# The Debian package of each tool, named in the "not installed" message.
DEBIAN_PACKAGES = {
    "buildah": "buildah",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "debootstrap": "debootstrap",
    "apt-get": "apt",
    "apt-cache": "apt",
    "tar": "tar",
    "git": "git",
}

OUTPUT_TAIL_CHARS = 3000


def require(tool: str) -> str:
    """Return the path of ``tool`` on PATH.

    Raises:
        ToolNotFoundError: the tool is not installed.
    """
    path = shutil.which(tool)
    if path is None:
        package = DEBIAN_PACKAGES.get(tool)
        hint = f"install the Debian package {package} (`make setup` does)" if package else "`make setup` installs it"
        raise ToolNotFoundError(f"{tool} is not installed or not on PATH; {hint}")
    return path


def run(args: list[str], *, what: str, cwd: Path | None = None, env: dict | None = None,
        timeout: float | None = None, capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command and return the completed process.

    ``what`` names the step in the error message ("build the model image").
    With ``capture`` false the output goes to this process's stdout and stderr,
    for long steps that a person watches.

    Raises:
        ToolNotFoundError: the program is not installed.
        ToolError: the program exits with a non-zero status or exceeds ``timeout`` seconds.
    """
    program = require(args[0]) if os.sep not in args[0] else args[0]
    command = [program, *args[1:]]
    logger.debug("running %s", shlex.join(command))
    try:
        completed = subprocess.run(command, cwd=cwd, env=env, timeout=timeout, check=False,
                                   capture_output=capture, text=True)
    except subprocess.TimeoutExpired as error:
        raise ToolError(f"failed to {what}: {args[0]} did not finish within {timeout:.0f} s") from error
    if completed.returncode != 0:
        output = ((completed.stderr or "") + (completed.stdout or "")).strip() if capture else ""
        detail = f":\n{output[-OUTPUT_TAIL_CHARS:]}" if output else " (its output is above)"
        raise ToolError(f"failed to {what}: `{shlex.join(command)}` exited with status "
                        f"{completed.returncode}{detail}")
    return completed


def repository_root() -> Path:
    """Return the monorepo checkout that contains this package (the folder with ``uv.lock``).

    Raises:
        ImageError: the package is installed outside a checkout.
    """
    for parent in Path(__file__).resolve().parents:
        if (parent / "uv.lock").is_file() and (parent / "model-images").is_dir():
            return parent
    raise ImageError(
        f"{__file__} is not inside a checkout of the platform (no uv.lock above it); "
        "image builds read the Dockerfiles and the lock file from the checkout"
    )


def cache_root() -> Path:
    """Return the folder for content-keyed image build caches: ``$CTR_CACHE_DIR`` or ``.cache/images``."""
    configured = os.environ.get("CTR_CACHE_DIR")
    return Path(configured) if configured else repository_root() / ".cache" / "images"


def dockerfile(name: str) -> Path:
    """Return the path of one of the Dockerfiles in ``model-images/``.

    Raises:
        ImageError: the file is missing.
    """
    path = repository_root() / "model-images" / name
    if not path.is_file():
        raise ImageError(f"Dockerfile {path} is missing")
    return path
