"""The training Job submitter against the local Kubernetes API stand-in (tests/k8s_api_stub.py).

The stand-in runs each Job's container command as a local process, so these
Jobs run small Python scripts in place of ``dvc repro``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml
from ctr_training.k8s_job import (
    DEFAULT_COMMAND,
    TrainingJobError,
    TrainingJobFailedError,
    TrainingJobRunner,
    TrainingJobSpec,
    TrainingJobTimeoutError,
    api_client,
    find_run_id,
    job_name,
    parse_file_line,
)

from tests.conftest import REPO_ROOT
from tests.k8s_api_stub import KubernetesApiStub

NAMESPACE = "ctr"
RUN_ID = "0123456789abcdef0123456789abcdef"
TRAINING_SCRIPT = f"""
import time
for stage in ("features", "train", "evaluate"):
    print(f"Running stage '{{stage}}':", flush=True)
    time.sleep(0.1)
print("CTR_MLFLOW_RUN_ID={RUN_ID}", flush=True)
print("done", flush=True)
"""


@pytest.fixture(scope="module")
def stub():
    with KubernetesApiStub() as server:
        yield server


@pytest.fixture(scope="module")
def kubeconfig(stub, tmp_path_factory):
    path = tmp_path_factory.mktemp("kube") / "config"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "stub",
        "clusters": [{"name": "stub", "cluster": {"server": stub.url}}],
        "users": [{"name": "stub", "user": {}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
    }))
    return path


@pytest.fixture
def runner(kubeconfig):
    lines = []
    return TrainingJobRunner(api_client(str(kubeconfig)), NAMESPACE, poll_seconds=0.1,
                             log_sink=lines.append), lines


def spec(name: str, script: str, **overrides) -> TrainingJobSpec:
    return TrainingJobSpec(name=name, image="registry.example.invalid/ctr-training:abc1234",
                           command=[sys.executable, "-c", script], **overrides)


def test_manifest_targets_training_nodes():
    manifest = TrainingJobSpec(name="ctr-train-abc", image="img:1", env={"B": "2", "A": "1"}).manifest()
    pod = manifest["spec"]["template"]["spec"]
    assert manifest["apiVersion"] == "batch/v1"
    assert manifest["spec"]["backoffLimit"] == 0
    assert manifest["spec"]["activeDeadlineSeconds"] == 6 * 3600
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"ctr.ai/workload": "training"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "ctr-training"
    container = pod["containers"][0]
    assert container["command"][-1].splitlines()[:3] == ["dvc pull -r s3 --allow-missing", "dvc repro",
                                                         "dvc push -r s3"]
    assert container["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]


def test_job_name_is_a_dns_label():
    name = job_name("0123456789abcdef", now=1_700_000_000)
    assert name == "ctr-train-0123456-s44we8"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert job_name("unknown", now=0) == "ctr-train-unknown-0"


def test_returned_files_parse_back():
    content = b"stages:\n  train: {}\n"
    line = "CTR_FILE dvc.lock " + base64.b64encode(content).decode()
    assert parse_file_line(line) == ("dvc.lock", content)
    assert parse_file_line("CTR_FILE ../outside.txt " + base64.b64encode(b"x").decode()) is None
    assert parse_file_line("CTR_FILE /etc/passwd " + base64.b64encode(b"x").decode()) is None
    assert parse_file_line("CTR_FILE dvc.lock not*base64") is None
    assert parse_file_line("Running stage 'train':") is None


def test_default_command_returns_tracked_files(tmp_path):
    """The shell loop at the end of the default command, run as the container would run it."""
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.lock").write_bytes(b"schema: '2.0'\n")
    (tmp_path / "metrics" / "gate.json").write_bytes(b'{"decision": "promoted"}')
    loop = DEFAULT_COMMAND[-1].splitlines()[-1]
    result = subprocess.run(["/bin/sh", "-ec", loop], cwd=tmp_path, capture_output=True, text=True, check=True)
    returned = dict(filter(None, map(parse_file_line, result.stdout.splitlines())))
    assert returned == {"dvc.lock": b"schema: '2.0'\n", "metrics/gate.json": b'{"decision": "promoted"}'}


def test_run_id_is_found_in_log_lines():
    assert find_run_id(f"CTR_MLFLOW_RUN_ID={RUN_ID}") == RUN_ID
    assert find_run_id("2026-12-04 INFO train: CTR_MLFLOW_RUN_ID=" + RUN_ID + " done") == RUN_ID
    assert find_run_id("CTR_MLFLOW_RUN_ID=short") is None


def test_job_returns_files(runner):
    submitter, lines = runner
    encoded = base64.b64encode(b"lock\n").decode()
    script = f"print('CTR_FILE dvc.lock {encoded}'); print('CTR_FILE ../x {encoded}')"
    result = submitter.run(spec("train-files", script), timeout=60)
    assert result.files == {"dvc.lock": b"lock\n"}
    assert lines[0] == "(returned dvc.lock, 5 bytes)"


def test_successful_job_streams_log_and_returns_run_id(runner, stub):
    submitter, lines = runner
    result = submitter.run(spec("train-ok", TRAINING_SCRIPT), timeout=60)
    assert result.succeeded
    assert result.exit_code == 0
    assert result.run_id == RUN_ID
    assert lines == ["Running stage 'features':", "Running stage 'train':", "Running stage 'evaluate':",
                     f"CTR_MLFLOW_RUN_ID={RUN_ID}", "done"]
    job = stub.jobs[(NAMESPACE, "train-ok")]
    assert job["status"]["succeeded"] == 1
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"ctr.ai/workload": "training"}


def test_failed_job_reports_exit_code(runner):
    submitter, lines = runner
    with pytest.raises(TrainingJobFailedError) as error:
        submitter.run(spec("train-fails", "import sys; print('stage train: error: no features', flush=True); "
                           "sys.exit(3)"), timeout=60)
    assert error.value.result.exit_code == 3
    assert error.value.result.reason == "BackoffLimitExceeded"
    assert error.value.result.run_id is None
    assert "exit code 3" in str(error.value)
    assert lines == ["stage train: error: no features"]


def test_timeout_deletes_job_and_stops_it(runner, stub):
    submitter, lines = runner
    started = time.monotonic()
    with pytest.raises(TrainingJobTimeoutError, match="did not finish within 2 s"):
        submitter.run(spec("train-hangs", "import time; print('working', flush=True); time.sleep(120)"),
                      timeout=2)
    assert time.monotonic() - started < 15
    assert lines == ["working"]
    assert (NAMESPACE, "train-hangs") not in stub.jobs
    deletes = [path for method, path in stub.requests if method == "DELETE"]
    assert f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/train-hangs?propagationPolicy=Background" in deletes


def test_active_deadline_fails_job(runner):
    submitter, _ = runner
    with pytest.raises(TrainingJobFailedError) as error:
        submitter.run(spec("train-deadline", "import time; time.sleep(120)", active_deadline_seconds=1),
                      timeout=60)
    assert error.value.result.reason == "DeadlineExceeded"
    assert error.value.result.exit_code == 137


def test_rejected_job_raises(runner):
    submitter, _ = runner
    with pytest.raises(TrainingJobError, match="HTTP 422"):
        submitter.run(spec("Not_A_Valid_Name", "print(1)"), timeout=10)


def test_duplicate_job_raises(runner):
    submitter, _ = runner
    submitter.run(spec("train-twice", "print(1)"), timeout=30)
    with pytest.raises(TrainingJobError, match="already exists"):
        submitter.run(spec("train-twice", "print(1)"), timeout=30)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctr.cli", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ), check=False)


def test_cli_succeeds_with_run_id(kubeconfig):
    result = run_cli("train-job", "--kubeconfig", str(kubeconfig), "--image", "img:1", "--name", "cli-ok",
                     "--poll-seconds", "0.1", "--", sys.executable, "-c", TRAINING_SCRIPT)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome == {"job": "cli-ok", "namespace": "ctr", "succeeded": True, "exit_code": 0,
                       "mlflow_run_id": RUN_ID, "reason": "CompletionsReached", "files": []}
    assert "Running stage 'train':" in result.stdout


def test_cli_writes_returned_files(kubeconfig, tmp_path):
    encoded = base64.b64encode(b'{"decision": "rejected"}\n').decode()
    script = f"print('CTR_FILE metrics/gate.json {encoded}')"
    result = run_cli("train-job", "--kubeconfig", str(kubeconfig), "--image", "img:1", "--name", "cli-files",
                     "--poll-seconds", "0.1", "--checkout", str(tmp_path), "--", sys.executable, "-c", script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["files"] == ["metrics/gate.json"]
    assert (tmp_path / "metrics" / "gate.json").read_bytes() == b'{"decision": "rejected"}\n'


def test_cli_exits_with_job_exit_code(kubeconfig):
    result = run_cli("train-job", "--kubeconfig", str(kubeconfig), "--image", "img:1", "--name", "cli-fails",
                     "--poll-seconds", "0.1", "--", sys.executable, "-c", "raise SystemExit(5)")
    assert result.returncode == 5
    assert json.loads(result.stdout.splitlines()[-1])["exit_code"] == 5
    assert "ctr train-job: error: training job ctr/cli-fails failed" in result.stderr


def test_cli_timeout_exit_code(kubeconfig):
    result = run_cli("train-job", "--kubeconfig", str(kubeconfig), "--image", "img:1", "--name", "cli-hangs",
                     "--timeout", "2", "--poll-seconds", "0.1", "--", sys.executable, "-c",
                     "import time; time.sleep(60)")
    assert result.returncode == 124
    assert "did not finish within 2 s" in result.stderr


def test_cli_dry_run_passes_environment(tmp_path):
    env_line = "MLFLOW_TRACKING_URI=http://mlflow.ctr.svc:5000"
    result = run_cli("train-job", "--image", "img:1", "--dry-run", "--env", env_line, "--env", "EXTRA=1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    env = {e["name"]: e["value"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.ctr.svc:5000"
    assert env["EXTRA"] == "1"
    assert env["DVC_NO_ANALYTICS"] == "1"
    assert re.fullmatch(r"[0-9a-f]{40}", env["CTR_GIT_COMMIT"])


def test_cli_without_image_fails():
    environment = {k: v for k, v in os.environ.items() if k != "CTR_TRAINING_IMAGE"}
    result = subprocess.run([sys.executable, "-m", "ctr.cli", "train-job"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, env=environment, check=False)
    assert result.returncode == 1
    assert "--image is required" in result.stderr
