"""``dvc repro`` in a copy of the repository, on 2,000 real Criteo lines, against the session's MLflow.

One module fixture runs the sequence a data scientist would: a first
``dvc repro --force``, an unchanged ``dvc repro``, a second ``dvc repro
--force`` in fresh processes (the model file must be byte-identical), and a
LightGBM parameter change (only train and evaluate may rerun). Each
stage runs in its own process as DVC starts it; the two features runs are the
only Spark jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.training.conftest import slice_lines

# The module fixture runs eight stage processes and two Spark JVMs; on a loaded
# 2-core machine that took 10 minutes, so the first test gets a longer timeout.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

LINES = 2000
COPIED = ("dvc.yaml", "params.yaml", "training/ctr_training", "inference/ctr_inference")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(command: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def make_repo(root: Path, criteo_sample: Path, model_name: str, experiment: str) -> dict:
    """Copy the pipeline into a fresh git + DVC repository with tiny settings; return the environment."""
    for item in COPIED:
        source = REPO_ROOT / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, root / item)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["datasets"]["criteo"]["registered_model"] = model_name
    params["mlflow"]["experiment"] = experiment
    params["spark"]["driver_memory"] = "1g"
    params["features"]["partitions"] = 2
    params["train"]["num_boost_round"] = 10
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    slice_lines(criteo_sample, root / "data" / "raw" / "criteo" / "part-00000.tsv", LINES)

    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.invalid")
    dvc = str(Path(sys.executable).parent / "dvc")
    run(["git", "init", "-q", "-b", "main"], root, env)
    run([dvc, "init", "-q"], root, env)
    config = (REPO_ROOT / ".dvc" / "config").read_text().replace("../dvc-remote", str(root.parent / "remote"))
    (root / ".dvc" / "config").write_text(config)
    run([dvc, "add", "-q", "data/raw/criteo"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "Pipeline under test"], root, env)
    return env


def experiment_runs(experiment: str) -> list:
    import mlflow

    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    return mlflow.MlflowClient().search_runs([found.experiment_id])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, criteo_sample, mlflow_uri):
    base = tmp_path_factory.mktemp("dvc")
    root = base / "repo"
    root.mkdir()
    model_name = f"ctr-dvc-{uuid.uuid4().hex[:8]}"
    experiment = f"dvc-test-{uuid.uuid4().hex[:8]}"
    env = make_repo(root, criteo_sample, model_name, experiment)
    dvc = str(Path(sys.executable).parent / "dvc")
    steps = {}

    def record(name: str, result: subprocess.CompletedProcess) -> None:
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        steps[name] = {
            "output": result.stdout + result.stderr,
            "model_sha256": sha256(root / "models" / "model.lgb"),
            "run": json.loads((root / "models" / "run.json").read_text()),
            "lock": lock,
            "runs": len(experiment_runs(experiment)),
            "gate": json.loads((root / "metrics" / "gate.json").read_text()),
            "features": {name: [pq.read_table(p) for p in sorted((root / "data" / "features" / name).glob("*.parquet"))]
                         for name in ("train", "valid", "test", "test_parsed")},
        }

    record("first", run([dvc, "repro", "--force"], root, env))
    record("unchanged", run([dvc, "repro"], root, env))
    record("forced", run([dvc, "repro", "--force"], root, env))

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["lightgbm"]["num_leaves"] = 7
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    record("num_leaves", run([dvc, "repro"], root, env))
    steps["status"] = run([dvc, "status"], root, env).stdout
    steps["push"] = run([dvc, "push"], root, env).stdout
    return {"root": root, "model_name": model_name, "experiment": experiment, "steps": steps}


def test_first_repro_runs_every_stage(pipeline):
    assert stages_run(pipeline["steps"]["first"]["output"]) == ["features", "train", "evaluate"]
    assert pipeline["steps"]["first"]["runs"] == 1


def test_unchanged_repro_runs_nothing(pipeline):
    step = pipeline["steps"]["unchanged"]
    assert stages_run(step["output"]) == []
    assert "Data and pipelines are up to date" in step["output"]
    assert step["runs"] == 1
    assert step["run"] == pipeline["steps"]["first"]["run"]


def test_forced_repro_gives_identical_model_file(pipeline):
    first, forced = pipeline["steps"]["first"], pipeline["steps"]["forced"]
    assert stages_run(forced["output"]) == ["features", "train", "evaluate"]
    assert forced["model_sha256"] == first["model_sha256"]
    assert forced["run"]["run_id"] != first["run"]["run_id"]
    assert forced["runs"] == 2


def test_forced_repro_gives_identical_features(pipeline):
    """Same rows, values and partitioning; Parquet footers may differ (see docs/training.md)."""
    first, forced = pipeline["steps"]["first"]["features"], pipeline["steps"]["forced"]["features"]
    assert forced.keys() == first.keys()
    for name, tables in first.items():
        assert len(forced[name]) == len(tables), name
        for a, b in zip(tables, forced[name]):
            assert a.equals(b), name


def test_parameter_change_reruns_dependent_stages(pipeline):
    step = pipeline["steps"]["num_leaves"]
    assert stages_run(step["output"]) == ["train", "evaluate"]
    assert "Stage 'features' didn't change, skipping" in step["output"]
    assert step["model_sha256"] != pipeline["steps"]["forced"]["model_sha256"]
    assert step["runs"] == 3
    assert step["lock"]["stages"]["train"]["params"]["params.yaml"]["lightgbm"]["num_leaves"] == 7


def test_pipeline_ends_clean(pipeline):
    assert "Data and pipelines are up to date" in pipeline["steps"]["status"]
    remote = pipeline["root"].parent / "remote"
    assert any(p.is_file() for p in remote.rglob("*"))


def test_gate_promotes_first_and_identical_models(pipeline):
    first, forced = pipeline["steps"]["first"]["gate"], pipeline["steps"]["forced"]["gate"]
    assert first["decision"] == "promoted"
    assert first["reason"] == "no champion yet"
    # The forced rerun trains the same model again, so its logloss equals the champion's.
    assert forced["decision"] == "promoted"
    assert forced["challenger_logloss"] == forced["champion_logloss"]
    assert forced["champion_version"] == pipeline["steps"]["first"]["run"]["model_version"]


def test_gate_judges_parameter_change(pipeline):
    import mlflow

    gate = pipeline["steps"]["num_leaves"]["gate"]
    record = pipeline["steps"]["num_leaves"]["run"]
    assert gate["run_id"] == record["run_id"]
    assert gate["champion_version"] == pipeline["steps"]["forced"]["run"]["model_version"]
    champion = mlflow.MlflowClient().get_model_version_by_alias(pipeline["model_name"], "champion").version
    expected = record["model_version"] if gate["promoted"] else gate["champion_version"]
    assert champion == expected


@pytest.fixture(scope="module")
def logged(pipeline):
    """The MLflow run of the first repro, with its artifacts listed and its model version."""
    import mlflow

    client = mlflow.MlflowClient()
    record = pipeline["steps"]["first"]["run"]
    run = client.get_run(record["run_id"])

    def listing(path=""):
        names = []
        for item in client.list_artifacts(record["run_id"], path):
            names.extend(listing(item.path) if item.is_dir else [item.path])
        return names

    version = client.get_model_version(record["model_name"], record["model_version"])
    return run, set(listing()), version


def test_run_logs_every_parameter(pipeline, logged):
    run, _, _ = logged
    params = yaml.safe_load((pipeline["root"] / "params.yaml").read_text())
    assert run.data.params["lightgbm.num_leaves"] == "31"
    assert run.data.params["sampling.negative_rate"] == str(params["sampling"]["negative_rate"])
    assert run.data.params["split.test_fraction"] == str(params["split"]["test_fraction"])
    assert run.data.params["gate.tolerance"] == str(params["gate"]["tolerance"])
    assert run.data.params["dataset"] == "criteo"
    assert run.data.params["datasets.criteo.categorical"].startswith("C1,C2,")


def test_run_logs_valid_and_test_metrics(logged):
    run, _, _ = logged
    for split in ("valid", "test"):
        for metric in ("auc", "logloss", "ne", "calibration", "ece", "mean_ctr_predicted", "mean_ctr_observed"):
            assert f"{split}_{metric}" in run.data.metrics, (split, metric)
    assert 0.5 < run.data.metrics["test_auc"] < 1
    assert run.data.metrics["test_ne"] < 1.05


def test_run_logs_calibration_and_plots(logged):
    _, artifacts, _ = logged
    for name in ("plots/roc.png", "plots/calibration.png", "plots/feature_importance.png",
                 "evaluation/calibration_test.json", "evaluation/calibration_valid.json",
                 "evaluation/feature_importance.json", "bundle/features.json", "bundle/encoding.parquet"):
        assert name in artifacts, name


def test_run_logs_deciles(pipeline, logged):
    import mlflow

    run, _, _ = logged
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="evaluation/calibration_test.json")
    table = json.loads(Path(path).read_text())
    assert [row["bin"] for row in table] == list(range(1, 11))
    assert sum(row["rows"] for row in table) == run.data.metrics["test_rows"]


def test_run_logs_inputs_with_digests(logged):
    run, _, _ = logged
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "valid", "test", "raw-criteo"}
    contexts = {name: {t.value for t in d.tags} for name, d in inputs.items()}
    assert contexts["train"] == {"training"}
    assert contexts["test"] == {"test"}
    for name, dataset in inputs.items():
        assert len(dataset.dataset.digest) == 20, name
    for name in ("train", "valid", "test"):
        assert run.data.tags[f"ctr.data.{name}.sha256"].startswith(inputs[name].dataset.digest)
    # The raw logs carry DVC's md5 instead of a second hash over every log file.
    assert run.data.tags["ctr.data.raw-criteo.dvc_md5"] == run.data.tags["dvc.md5.data/raw/criteo"].removesuffix(".dir")
    assert run.data.tags["ctr.data.raw-criteo.dvc_md5"].startswith(inputs["raw-criteo"].dataset.digest)


def test_run_tags_git_and_dvc_versions(pipeline, logged):
    run, _, _ = logged
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=pipeline["root"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert run.data.tags["ctr.git_commit"] == commit
    lock = pipeline["steps"]["first"]["lock"]["stages"]["features"]
    raw = next(d["md5"] for d in lock["deps"] if d["path"] == "data/raw/criteo")
    assert run.data.tags["dvc.md5.data/raw/criteo"] == raw
    train = next(o["md5"] for o in lock["outs"] if o["path"] == "data/features/train")
    assert run.data.tags["dvc.md5.data/features/train"] == train


def test_model_has_signature_and_example(logged):
    import mlflow

    _, _, version = logged
    info = mlflow.models.get_model_info(f"models:/{version.name}/{version.version}")
    inputs = [spec.name for spec in info.signature.inputs.inputs]
    assert inputs[:2] == ["I1", "I2"]
    assert len(inputs) == 39
    assert info.saved_input_example_info is not None


def test_model_file_is_the_registered_one(pipeline, logged):
    import mlflow

    _, _, version = logged
    path = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}")) / "model.lgb"
    assert sha256(path) == pipeline["steps"]["first"]["model_sha256"]


def test_bundle_facts_carry_sampling(pipeline, logged):
    import mlflow

    run, _, _ = logged
    facts = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="bundle/features.json")).read_text())
    params = yaml.safe_load((pipeline["root"] / "params.yaml").read_text())
    assert facts["sampling"] == {"negative_rate": params["sampling"]["negative_rate"], "seed": params["sampling"]["seed"]}
    assert [f["name"] for f in facts["features"]][:3] == ["I1", "I2", "I3"]
