"""`make ci-local`: the pipeline's jobs in order on this machine."""

from __future__ import annotations

import argparse
import importlib
import subprocess

import pytest
from deploy_support import REPO_ROOT


def image_push_registered() -> bool:
    from ctr.cli import COMMAND_MODULES

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"ctr.commands.{name}").register(subparsers)
        except ModuleNotFoundError:
            continue
    image = subparsers.choices.get("image")
    if image is None:
        return False
    commands = next((a for a in image._actions if isinstance(a, argparse._SubParsersAction)), None)
    return commands is not None and "push" in commands.choices


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not image_push_registered(), reason="`ctr image push` is not a registered command yet")
def test_make_ci_local_passes():
    completed = subprocess.run(["make", "--no-print-directory", "ci-local"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=False, timeout=1800)

    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert "ci-local: the pipeline's jobs passed" in completed.stdout
    assert "promote" in completed.stdout
