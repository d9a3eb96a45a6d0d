"""The real runtime image: built from the debootstrap base, baked with a model, run as a worker in a chroot.

The base root filesystem, the wheels and the runtime image are cached under
``.cache/images`` by content hash, so only the first run on a machine pays
for debootstrap, the wheel downloads and the runtime build.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ctr_images import tools
from ctr_images.bake import bake
from ctr_images.runtime_image import WORKER_UID, build_runtime_image
from ctr_inference.messages import make_request, split_s3_uri

from ctr.local_infra import provision
from ctr.services import free_port
from tests.helpers import feature_table

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(2400)]

DT = "2026-12-01"
ROWS = 500


@pytest.fixture(scope="module")
def runtime_image():
    if os.geteuid() != 0:
        pytest.skip("debootstrap, umoci unpack and chroot need root")
    return build_runtime_image(layout=tools.cache_root() / "runtime-for-tests")


@pytest.fixture(scope="module")
def model_image(runtime_image, registered_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("bake-on-runtime")
    return bake(registered_model.name, registered_model.version, work / "bundles", work / "layout",
                base=runtime_image.reference)


@pytest.fixture(scope="module")
def unpacked(model_image, tmp_path_factory):
    """The model image unpacked by umoci: ``rootfs/`` and the OCI runtime ``config.json``."""
    target = tmp_path_factory.mktemp("unpacked") / "bundle"
    tools.run(["umoci", "unpack", "--image", f"{model_image.image.layout}:{model_image.image.tag}", str(target)],
              what="unpack the model image", timeout=900)
    return target


def test_runtime_labels_record_the_base(runtime_image):
    from ctr_images.oci_layout import read_config, read_manifest

    manifest, _ = read_manifest(runtime_image.layout, runtime_image.tag)
    labels = read_config(runtime_image.layout, manifest)["config"]["Labels"]

    assert labels["org.opencontainers.image.base.digest"] == runtime_image.base.digest
    assert labels["org.opencontainers.image.base.name"] == runtime_image.base.name
    assert labels["ai.ctr.runtime.python"] == "3.11"


def test_image_runs_as_non_root_without_build_tools(unpacked):
    config = json.loads((unpacked / "config.json").read_text())
    rootfs = unpacked / "rootfs"

    assert config["process"]["user"]["uid"] == WORKER_UID
    assert config["process"]["args"] == ["/opt/ctr/venv/bin/ctr-worker"]
    assert (rootfs / "opt/ctr/bundle/bundle.json").is_file()
    assert (rootfs / "opt/ctr/venv/bin/ctr-worker").is_file()
    for absent in ("opt/ctr/venv/bin/pip", "usr/bin/gcc", "usr/bin/cc", "tmp/wheels", "tmp/debs"):
        assert not (rootfs / absent).exists(), absent


def test_runtime_has_compiled_engine(unpacked):
    site_packages = unpacked / "rootfs/opt/ctr/venv/lib/python3.11/site-packages"

    assert (site_packages / "lleaves").is_dir()
    assert (site_packages / "llvmlite").is_dir()
    assert (unpacked / "rootfs/opt/ctr/bundle/compiled/model.lleaves.o").is_file()


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll a readiness endpoint until it returns 200, the process exits, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def test_worker_in_image_scores_one_partition(unpacked, model_image, registered_model, aws_endpoint, s3, sqs):
    metrics_port = free_port()
    resources = provision(s3, sqs, prefix="images-chroot")
    key = f"features/dt={DT}/part-00000.parquet"
    buffer = io.BytesIO()
    pq.write_table(feature_table(ROWS, seed=5, label=False), buffer)
    s3.put_object(Bucket=resources.features_bucket, Key=key, Body=buffer.getvalue())
    request = make_request(f"s3://{resources.features_bucket}/{key}", DT, registered_model.name,
                           registered_model.version, resources.predictions_bucket)
    sqs.send_message(QueueUrl=resources.queue_url, MessageBody=request.to_json())

    config = json.loads((unpacked / "config.json").read_text())
    environment = dict(variable.split("=", 1) for variable in config["process"]["env"])
    environment.update({
        "QUEUE_URL": resources.queue_url, "PREDICTIONS_BUCKET": resources.predictions_bucket,
        "AWS_ENDPOINT_URL": aws_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "WAIT_TIME_SECONDS": "1", "EXIT_WHEN_IDLE_SECONDS": "5", "LOG_FORMAT": "json",
        "IMAGE_REF": model_image.image.tag, "IMAGE_DIGEST": model_image.image.digest,
        "METRICS_HOST": "127.0.0.1", "METRICS_PORT": str(metrics_port),
    })
    user = config["process"]["user"]
    rootfs = unpacked / "rootfs"
    # A container runtime mounts /proc, where the worker reads the CPU flags that decide
    # whether it may use the compiled form. unshare mounts it in a private mount namespace,
    # which ends with the worker.
    worker = subprocess.Popen(
        ["unshare", "--fork", "--pid", "--mount", f"--mount-proc={rootfs / 'proc'}",
         "chroot", f"--userspec={user['uid']}:{user['gid']}", str(rootfs), *config["process"]["args"]],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    ready = wait_until_ready(f"http://127.0.0.1:{metrics_port}/readyz", worker)
    output, _ = worker.communicate(timeout=300)

    assert worker.returncode == 0, output[-4000:]
    assert ready, output[-4000:]
    assert "serving model" in output
    assert "scoring engine lleaves" in output
    bucket, output_key = split_s3_uri(request.output_uri)
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=output_key)["Body"].read()))
    metadata = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert table.num_rows == ROWS
    assert table.column("row_id").to_pylist() == list(range(1, ROWS + 1))
    assert all(0.0 < value < 1.0 for value in table.column("ctr").to_pylist())
    assert metadata["ctr.model_version"] == registered_model.version
    assert metadata["ctr.image_digest"] == model_image.image.digest
    assert metadata["ctr.bundle_digest"] == model_image.bundle_digest
    attributes = sqs.get_queue_attributes(QueueUrl=resources.queue_url, AttributeNames=["All"])["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_unpacked_bundle_is_the_baked_bundle(unpacked, model_image):
    from ctr_inference.bundle import load_bundle

    assert load_bundle(Path(unpacked / "rootfs/opt/ctr/bundle")).digest == model_image.bundle_digest
