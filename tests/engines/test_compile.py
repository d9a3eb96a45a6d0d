"""compile_bundle: child processes, the chosen engine and the metadata the worker reads."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ctr_images.compile import (
    CRASHED,
    FAILED,
    MISMATCH,
    OK,
    TIMED_OUT,
    compile_bundle,
    compile_candidate,
    run_child,
    split_measurements,
)
from ctr_inference.bundle import load_bundle
from ctr_inference.check_rows import CHECK_ROWS_FILE, read_check_rows
from ctr_inference.cpu import TARGET_FLAGS, read_cpuinfo
from ctr_inference.engines import PARITY_TOLERANCE, LightGBMEngine, load_engine

from tests.engines.conftest import FREQUENCY, features_for, new_model_dir


def test_compiled_section_describes_artifact(compiled_bundle_dir):
    bundle = load_bundle(compiled_bundle_dir)
    compiled = bundle.metadata["compiled"]
    assert compiled["engine"] == "lleaves"
    assert compiled["file"] == "compiled/model.lleaves.o"
    assert bundle.metadata["files"][compiled["file"]] == compiled["sha256"]
    assert compiled["target"]["cpu"] == "x86-64-v3"
    assert compiled["target"]["required_flags"] == sorted(TARGET_FLAGS["x86-64-v3"])
    assert compiled["baked_on"]["cpu_model"] == read_cpuinfo().model_name
    assert compiled["parity"]["max_abs_diff"] <= PARITY_TOLERANCE
    assert compiled["rows_per_second_per_core"]["lleaves"] > 0
    assert compiled["rows_per_second_per_core"]["lightgbm"] > 0


def test_split_measurements(compiled_bundle_dir):
    section = load_bundle(compiled_bundle_dir).metadata["compiled"]

    reproducible, measurements = split_measurements(section)

    assert "baked_on" not in reproducible
    assert "rows_per_second_per_core" not in reproducible
    assert measurements["baked_on"] == section["baked_on"]
    assert measurements["rows_per_second_per_core"] == section["rows_per_second_per_core"]
    assert reproducible["sha256"] == section["sha256"]
    assert reproducible["parity"] == section["parity"]
    assert [c["engine"] for c in reproducible["candidates"]] == [c["engine"] for c in section["candidates"]]
    for candidate, measured in zip(reproducible["candidates"], measurements["candidates"]):
        assert "compile_seconds" not in candidate
        assert "rows_per_second_per_core" not in candidate
        assert "detail" not in candidate
        assert candidate["status"] in (OK, MISMATCH)
        assert measured["compile_seconds"] > 0


def test_only_chosen_artifact_is_kept(compiled_bundle_dir):
    assert sorted(path.name for path in (compiled_bundle_dir / "compiled").iterdir()) == [
        "model.lleaves.o"]


def test_every_candidate_is_recorded(compiled_bundle_dir):
    compiled = load_bundle(compiled_bundle_dir).metadata["compiled"]
    statuses = {candidate["engine"]: candidate["status"] for candidate in compiled["candidates"]}
    assert statuses["lleaves"] == OK
    # TL2cgen reads some thresholds as missing values, so it fails parity or is slower.
    assert statuses["tl2cgen"] in (OK, MISMATCH)


def test_check_rows_stored_with_expected(compiled_bundle_dir):
    bundle = load_bundle(compiled_bundle_dir)
    section = bundle.metadata["compiled"]["check_rows"]
    rows = read_check_rows(compiled_bundle_dir / CHECK_ROWS_FILE, bundle.features)
    assert section["rows"] == len(rows)
    assert section["kinds"] == rows.counts()
    np.testing.assert_array_equal(rows.expected, bundle.load_booster().predict(rows.matrix))


def test_bundle_json_is_strict_json(compiled_bundle_dir):
    text = (compiled_bundle_dir / "bundle.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"bundle.json contains {name}"))


def test_load_engine_uses_compiled_form(compiled_bundle_dir):
    bundle = load_bundle(compiled_bundle_dir)
    engine = load_engine(bundle, threads=2)
    assert engine.name == "lleaves"
    rows = read_check_rows(compiled_bundle_dir / CHECK_ROWS_FILE, bundle.features)
    reference = LightGBMEngine(bundle, 1).predict(rows.matrix)
    assert np.abs(engine.predict(rows.matrix) - reference).max() <= PARITY_TOLERANCE


def test_scorer_with_compiled_engine(compiled_bundle_dir):
    import pyarrow as pa
    from ctr_inference.scorer import Scorer

    bundle = load_bundle(compiled_bundle_dir)
    rows = read_check_rows(compiled_bundle_dir / CHECK_ROWS_FILE, bundle.features)
    columns = {feature.name: pa.array(rows.matrix[:, j]) for j, feature in enumerate(bundle.features)}
    table = pa.table({"row_id": pa.array(np.arange(len(rows)), pa.int64()), **columns})
    scorer = Scorer(bundle, threads=1)
    assert scorer.engine.name == "lleaves"
    output = scorer.score(table)
    assert output.column("row_id").to_pylist() == list(range(len(rows)))
    difference = np.abs(output.column("ctr").to_numpy() - rows.expected)
    assert difference.max() <= PARITY_TOLERANCE


def test_compile_needs_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.lgb"):
        compile_bundle(tmp_path)


@pytest.fixture
def crash_module(tmp_path, monkeypatch):
    """A module on PYTHONPATH whose process dies by SIGSEGV, exits 3 or sleeps, by argument."""
    (tmp_path / "crashing_child.py").write_text(textwrap.dedent("""
        import os, signal, sys, time
        step = sys.argv[1]
        if step == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        if step == "exit":
            print("broken", file=sys.stderr)
            sys.exit(3)
        if step == "sleep":
            time.sleep(30)
        if step == "grandchild":
            import subprocess
            grandchild = subprocess.Popen(["sleep", "30"])
            with open(sys.argv[2], "w") as handle:
                handle.write(str(grandchild.pid))
            time.sleep(30)
        print("not json")
    """))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(sys.path)}")
    return "crashing_child"


@pytest.mark.parametrize(
    ("step", "status", "detail"),
    [
        ("segfault", CRASHED, "SIGSEGV"),
        ("exit", FAILED, "exit code 3"),
        ("nothing", FAILED, "no JSON"),
        ("sleep", TIMED_OUT, "after 2 s"),
    ],
)
def test_run_child_reports_failures(crash_module, step, status, detail):
    result_status, result = run_child([step], timeout=2, module=crash_module)
    assert result_status == status
    assert detail in result


def test_run_child_timeout_ends_grandchildren(crash_module, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    status, _ = run_child(["grandchild", str(pid_file)], timeout=3, module=crash_module)
    assert status == TIMED_OUT
    pid = int(pid_file.read_text())
    # The killed grandchild is reaped by init; until then it may linger as a zombie.
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except FileNotFoundError:
            return
        if state == "Z":
            return
        time.sleep(0.1)
    pytest.fail(f"grandchild {pid} still runs after the timeout")


def test_corrupt_artifact_rejected(tmp_path):
    directory = new_model_dir(tmp_path, FREQUENCY)
    compile_bundle(directory, features_for(FREQUENCY), engines=("lleaves",))
    artifact = directory / "compiled" / "model.lleaves.o"
    artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 3])
    status, detail = run_child(["check", "--engine", "lleaves", "--model", str(directory / "model.lgb"),
                                "--artifact", str(artifact),
                                "--check-rows", str(directory / CHECK_ROWS_FILE)], timeout=120)
    assert status in (CRASHED, FAILED), detail


def test_unavailable_engine_recorded(tmp_path):
    directory = new_model_dir(tmp_path, FREQUENCY)
    candidate = compile_candidate("no-such-engine", directory / "model.lgb",
                                  directory / "x.o", directory / CHECK_ROWS_FILE)
    assert candidate["status"] == "unavailable"


def test_no_passing_engine_leaves_no_artifact(tmp_path):
    directory = new_model_dir(tmp_path, FREQUENCY)
    section = compile_bundle(directory, features_for(FREQUENCY), engines=())
    assert section["engine"] is None
    assert "file" not in section
    assert not (directory / "compiled").exists()
    assert (directory / CHECK_ROWS_FILE).is_file()
