"""Image references, registry addresses and the runtime's locked requirements."""

from __future__ import annotations

import pytest
from ctr_images.errors import ImageError, RegistryUnavailableError
from ctr_images.registry import (
    check_registry,
    is_loopback,
    local_layout,
    parse_repository,
    resolve_image,
    without_tag_if_pinned,
)
from ctr_images.runtime_image import locked_pip_requirement, locked_requirements, requirement_blocks

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(("host", "expected"), [
    ("127.0.0.1:5000", True),
    ("127.1.2.3", True),
    ("localhost:5000", True),
    ("[::1]:5000", True),
    ("10.0.0.1:5000", False),
    ("111122223333.dkr.ecr.us-east-1.amazonaws.com", False),
])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


@pytest.mark.parametrize(("text", "host", "repository", "tag"), [
    ("127.0.0.1:5000/ctr-model", "127.0.0.1:5000", "ctr-model", ""),
    ("docker://127.0.0.1:5000/team/ctr-model:v1", "127.0.0.1:5000", "team/ctr-model", "v1"),
    ("r.example/ctr-model:ctr-criteo-v4-1a2b3c4", "r.example", "ctr-model", "ctr-criteo-v4-1a2b3c4"),
    ("localhost/ctr-model", "localhost", "ctr-model", ""),
])
def test_parse_repository(text, host, repository, tag):
    parsed, parsed_tag = parse_repository(text)

    assert parsed.host == host
    assert parsed.repository == repository
    assert parsed_tag == tag


@pytest.mark.parametrize("text", ["ctr-model", "ctr/model", f"r.example/ctr-model@{DIGEST}", "r.example/CTR"])
def test_parse_repository_rejects(text):
    with pytest.raises(ImageError, match="invalid"):
        parse_repository(text)


def test_without_tag_if_pinned():
    assert without_tag_if_pinned(f"r.example:5000/m:t@{DIGEST}") == f"r.example:5000/m@{DIGEST}"
    assert without_tag_if_pinned("r.example:5000/m:t") == "r.example:5000/m:t"
    assert without_tag_if_pinned(f"r.example:5000/m@{DIGEST}") == f"r.example:5000/m@{DIGEST}"


def test_local_layout_needs_an_existing_folder(tmp_path):
    assert local_layout(f"{tmp_path}:tag") == (tmp_path, "tag")
    assert local_layout(str(tmp_path)) == (tmp_path, "")
    assert local_layout(f"oci:{tmp_path / 'missing'}:tag") == (tmp_path / "missing", "tag")
    assert local_layout("127.0.0.1:5000/ctr-model:tag") is None
    with pytest.raises(ImageError, match="empty"):
        local_layout(" ")


def test_resolve_scratch():
    resolved = resolve_image(None)

    assert resolved.is_scratch
    assert resolved.digest == ""
    assert resolve_image("scratch") == resolved


def test_check_registry_without_server():
    from ctr.services import free_port

    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailableError, match=f"http://{host}/v2/"):
        check_registry(host, tls_verify=False)


def test_requirement_blocks_keep_hashes():
    exported = ("numpy==2.0.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via lightgbm\n"
                "six==1.17.0 \\\n    --hash=sha256:cc\n")
    blocks = requirement_blocks(exported)

    assert blocks["numpy"] == "numpy==2.0.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb"
    assert blocks["six"] == "six==1.17.0 \\\n    --hash=sha256:cc"


def test_locked_requirements_are_the_inference_closure():
    requirements = locked_requirements()
    names = {line.split("==")[0] for line in requirements.splitlines() if "==" in line}

    assert {"lightgbm", "numpy", "pyarrow", "boto3", "prometheus-client"} <= names
    assert not names & {"pytest", "mlflow", "pyspark", "ctr-inference"}
    for name, block in requirement_blocks(requirements).items():
        assert "--hash=sha256:" in block, name


def test_locked_requirements_include_compiled_engines():
    from ctr_images.compile import DEFAULT_ENGINES

    names = set(requirement_blocks(locked_requirements()))

    assert "lleaves" in names
    assert "llvmlite" in names
    # The bake's default candidates are the engines a worker in the runtime image can load.
    for engine in DEFAULT_ENGINES:
        assert engine in names, engine


def test_locked_pip_has_hashes():
    pip = locked_pip_requirement()

    assert pip.startswith("pip==")
    assert "--hash=sha256:" in pip
