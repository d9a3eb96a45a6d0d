"""ctr plan: speed sources, sizing rules and the command's text and JSON output."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from ctr.plan import (
    SPOT_NOTICE_SECONDS,
    Assumptions,
    PlanError,
    Speed,
    make_plan,
    override_prices,
    parse_duration,
    render,
    speed_from_bundle,
    speed_from_results,
)


def results_file(tmp_path, engines: dict) -> str:
    """A benchmark results file with one reference model and the given engine entries."""
    document = {
        "measured_at": "2026-01-01T00:00:00Z",
        "machine": {"cpu_model": "Test CPU"},
        "reference_model": "reference-500x63",
        "models": [{"model": "reference-500x63", "engines": engines}],
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(document))
    return path


def engine_entry(one_thread: float, two_threads: float, diff: float | None = 0.0) -> dict:
    return {
        "status": "ok",
        "threads": {"1": {"rows_per_second": one_thread}, "2": {"rows_per_second": two_threads}},
        "max_abs_diff_by_kind": {"ordinary": diff, "threshold": diff, "scored_rows": 0.5},
    }


SPEED = Speed(source="test", model="m", engine="lleaves", rows_per_second_per_core=100_000,
              parallel_efficiency=1.0, measured_on="Test CPU")


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600), ("45m", 2700), ("1h30m", 5400),
                                                ("90s", 90), ("3600", 3600), ("0.5h", 1800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "h1", "0", "-5m", "1h 30m"])
def test_parse_duration_invalid(text):
    with pytest.raises(PlanError):
        parse_duration(text)


def test_results_pick_fastest_matching_engine(tmp_path):
    path = results_file(tmp_path, {
        "lightgbm": engine_entry(50_000, 95_000),
        "lleaves": engine_entry(190_000, 300_000, diff=1e-15),
        # Faster, but float32: it does not match LightGBM within 1e-9.
        "onnx": engine_entry(250_000, 480_000, diff=1e-7),
        "tl2cgen": {"status": "crashed", "detail": "killed by SIGSEGV"},
    })
    speed = speed_from_results(path)
    assert speed.engine == "lleaves"
    assert speed.rows_per_second_per_core == 190_000
    assert speed.parallel_efficiency == pytest.approx(300_000 / 380_000)
    assert speed.measured_on.startswith("Test CPU")


def test_results_nan_difference_excluded(tmp_path):
    path = results_file(tmp_path, {"lightgbm": engine_entry(50_000, 95_000),
                                   "lleaves": engine_entry(190_000, 300_000, diff=None)})
    assert speed_from_results(path).engine == "lightgbm"


def test_results_missing_file(tmp_path):
    with pytest.raises(PlanError, match="make bench"):
        speed_from_results(tmp_path / "absent.json")


def test_results_unknown_model(tmp_path):
    path = results_file(tmp_path, {"lightgbm": engine_entry(1, 2)})
    with pytest.raises(PlanError, match="no model 'other'"):
        speed_from_results(path, "other")


def test_bundle_speed(tmp_path):
    metadata = {"model": {"name": "ctr", "version": 7},
                "compiled": {"engine": "lleaves", "baked_on": {"cpu_model": "Bake CPU"},
                             "rows_per_second_per_core": {"lleaves": 180_000.0, "lightgbm": 48_000.0}}}
    (tmp_path / "bundle.json").write_text(json.dumps(metadata))
    speed = speed_from_bundle(tmp_path)
    assert speed.engine == "lleaves"
    assert speed.rows_per_second_per_core == 180_000
    assert speed.model == "ctr version 7"


def test_bundle_speed_from_bake_report(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    metadata = {"model": {"name": "ctr", "version": 7}, "compiled": {"engine": "lleaves"}}
    (bundle / "bundle.json").write_text(json.dumps(metadata))
    report = {"engine": "lleaves", "baked_on": {"cpu_model": "Bake CPU"},
              "rows_per_second_per_core": {"lleaves": 170_000.0, "lightgbm": 48_000.0}}
    (tmp_path / "compile-report.json").write_text(json.dumps(report))

    speed = speed_from_bundle(bundle)

    assert speed.engine == "lleaves"
    assert speed.rows_per_second_per_core == 170_000
    assert speed.measured_on == "Bake CPU"
    assert speed.source == str(tmp_path / "compile-report.json")


def test_bundle_without_compiled_uses_lightgbm(tmp_path):
    metadata = {"model": {"name": "ctr", "version": 7},
                "compiled": {"engine": None, "rows_per_second_per_core": {"lightgbm": 48_000.0}}}
    (tmp_path / "bundle.json").write_text(json.dumps(metadata))
    assert speed_from_bundle(tmp_path).engine == "lightgbm"


def test_bundle_without_speed(tmp_path):
    (tmp_path / "bundle.json").write_text(json.dumps({"model": {"name": "ctr", "version": 1}}))
    with pytest.raises(PlanError, match="no measured speed"):
        speed_from_bundle(tmp_path)


def test_plan_scores_all_rows_before_deadline():
    assumptions = Assumptions()
    plan = make_plan(1e9, 3600, SPEED, assumptions)
    capacity = plan.pods * plan.pod_rows_per_second * plan.scoring_budget_seconds
    assert capacity >= 1e9
    # One pod fewer would not be enough.
    assert (plan.pods - 1) * plan.pod_rows_per_second * plan.scoring_budget_seconds < 1e9
    startup = (assumptions.node_start_seconds + assumptions.image_pull_seconds
               + assumptions.worker_start_seconds)
    assert startup + plan.scoring_budget_seconds + plan.partition_seconds <= 3600


def test_expected_time_fits_budget():
    assumptions = Assumptions()
    plan = make_plan(1e9, 3600, SPEED, assumptions)
    assert plan.startup_seconds == (assumptions.node_start_seconds + assumptions.image_pull_seconds
                                    + assumptions.worker_start_seconds)
    assert plan.expected_scoring_seconds == pytest.approx(1e9 / (plan.pods * plan.pod_rows_per_second))
    assert plan.expected_scoring_seconds <= plan.scoring_budget_seconds


def test_render_separates_budget_and_expected_time():
    plan = make_plan(1e9, 3600, SPEED, Assumptions())
    lines = render(plan).splitlines()
    budget = next(line for line in lines if "time budget for scoring" in line)
    expected = next(line for line in lines if "expected scoring time" in line)
    assert f"{plan.scoring_budget_seconds / 60:.1f} min" in budget
    assert f"{plan.expected_scoring_seconds / 60:.1f} min at {plan.pods} pods" in expected
    assert not any("after start-up" in line for line in lines)


def test_pod_rate_applies_efficiencies():
    speed = Speed("test", "m", "lleaves", 100_000, 0.8, "cpu")
    plan = make_plan(1e9, 3600, speed, Assumptions(pod_cpus=2, end_to_end_efficiency=0.9))
    assert plan.pod_rows_per_second == pytest.approx(100_000 * 2 * 0.8 * 0.9)


def test_one_cpu_pod_ignores_parallel_efficiency():
    speed = Speed("test", "m", "lleaves", 100_000, 0.5, "cpu")
    plan = make_plan(1e9, 3600, speed, Assumptions(pod_cpus=1, pod_cpu_request=0.95,
                                                    end_to_end_efficiency=1.0))
    assert plan.pod_rows_per_second == pytest.approx(100_000)


def test_partition_within_spot_notice_and_size():
    plan = make_plan(1e9, 3600, SPEED, Assumptions(partition_seconds=30, max_partition_megabytes=128))
    assert plan.partition_seconds <= 30 < SPOT_NOTICE_SECONDS
    assert plan.partition_megabytes <= 128
    assert plan.messages == math.ceil(1e9 / plan.partition_rows)


def test_partition_capped_by_megabytes():
    fast = Speed("test", "m", "lleaves", 10_000_000, 1.0, "cpu")
    plan = make_plan(1e9, 3600, fast, Assumptions(bytes_per_row=200, max_partition_megabytes=128))
    assert plan.partition_rows <= 128e6 / 200
    assert plan.partition_megabytes <= 128


def test_keda_target_reaches_pods():
    plan = make_plan(1e9, 3600, SPEED)
    # KEDA's SQS scaler wants ceil(queue length / target) replicas; the cap is the pod count.
    assert math.ceil(plan.messages / plan.keda_messages_per_pod) >= plan.pods
    assert plan.keda_max_replicas == plan.pods


def test_nodes_hold_all_pods():
    assumptions = Assumptions(pod_cpu_request=1.9, pod_memory_gib=2, node_reserved_cpus=0.3)
    plan = make_plan(1e9, 3600, SPEED, assumptions)
    by_type = {node.instance_type: node for node in plan.nodes}
    assert by_type["c6i.2xlarge"].pods_per_node == 4
    for node in plan.nodes:
        assert node.nodes * node.pods_per_node >= plan.pods
        assert (node.nodes - 1) * node.pods_per_node < plan.pods


def test_faster_engine_needs_fewer_pods():
    slow = make_plan(1e9, 3600, Speed("t", "m", "lightgbm", 50_000, 1.0, "cpu"))
    fast = make_plan(1e9, 3600, Speed("t", "m", "lleaves", 190_000, 1.0, "cpu"))
    assert fast.pods < slow.pods


def test_deadline_too_short():
    with pytest.raises(PlanError, match="no scoring time"):
        make_plan(1e9, 60, SPEED)


@pytest.mark.parametrize("change", [{"end_to_end_efficiency": 0}, {"headroom": 1.0},
                                    {"partition_seconds": 150}, {"pod_cpu_request": 3}])
def test_invalid_assumptions(change):
    with pytest.raises(PlanError):
        make_plan(1e9, 3600, SPEED, Assumptions(**change))


def test_price_override():
    types = {instance.name: instance for instance in override_prices(["c6i.2xlarge=0.5"])}
    assert types["c6i.2xlarge"].usd_per_hour == 0.5
    with pytest.raises(PlanError, match="unknown instance type"):
        override_prices(["z9.huge=1"])
    with pytest.raises(PlanError, match="invalid price"):
        override_prices(["c6i.2xlarge=cheap"])


def run_command(argv: list[str], capsys) -> str:
    from ctr.commands import plan as command

    parser = argparse.ArgumentParser(prog="ctr")
    subparsers = parser.add_subparsers(dest="command", required=True)
    command.register(subparsers)
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    return capsys.readouterr().out


def test_command_text(tmp_path, capsys):
    path = results_file(tmp_path, {"lightgbm": engine_entry(50_000, 95_000),
                                   "lleaves": engine_entry(190_000, 300_000)})
    output = run_command(["plan", "--rows", "1e9", "--deadline", "1h", "--results", str(path)], capsys)
    assert "pods" in output
    assert "KEDA messages per pod" in output
    assert "c6i.2xlarge" in output
    assert "image pull 30 s" in output
    assert "lleaves on reference-500x63" in output


def test_command_json(tmp_path, capsys):
    path = results_file(tmp_path, {"lightgbm": engine_entry(50_000, 95_000),
                                   "lleaves": engine_entry(190_000, 300_000)})
    output = run_command(["plan", "--results", str(path), "--json", "--pod-cpus", "1",
                          "--pod-cpu-request", "0.95", "--price", "c6a.2xlarge=0.2"], capsys)
    plan = json.loads(output)
    assert plan["speed"]["engine"] == "lleaves"
    assert plan["assumptions"]["pod_cpus"] == 1
    assert plan["pods"] >= 1
    prices = {node["instance_type"]: node["usd_per_hour"] / node["nodes"] for node in plan["nodes"]}
    assert prices["c6a.2xlarge"] == pytest.approx(0.2)


def test_command_parallel_efficiency_override(tmp_path, capsys):
    path = results_file(tmp_path, {"lightgbm": engine_entry(50_000, 95_000),
                                   "lleaves": engine_entry(190_000, 200_000)})
    measured = json.loads(run_command(["plan", "--results", str(path), "--json"], capsys))
    override = json.loads(run_command(["plan", "--results", str(path), "--json",
                                       "--parallel-efficiency", "1.0"], capsys))
    assert measured["speed"]["parallel_efficiency"] == pytest.approx(200_000 / 380_000)
    assert override["speed"]["parallel_efficiency"] == 1.0
    assert override["pods"] < measured["pods"]


def test_command_with_bundle(tmp_path, capsys):
    metadata = {"model": {"name": "ctr", "version": 3},
                "compiled": {"engine": "lleaves", "rows_per_second_per_core": {"lleaves": 150_000.0}}}
    (tmp_path / "bundle.json").write_text(json.dumps(metadata))
    output = run_command(["plan", "--model", str(tmp_path), "--json"], capsys)
    assert json.loads(output)["speed"]["model"] == "ctr version 3"


def test_committed_results_give_a_plan():
    from ctr.plan import DEFAULT_RESULTS

    if not DEFAULT_RESULTS.is_file():
        pytest.skip(f"no benchmark results at {DEFAULT_RESULTS}")
    speed = speed_from_results(DEFAULT_RESULTS)
    plan = make_plan(1e9, 3600, speed)
    assert plan.pods >= 1


def add_end_to_end(path, engine: str, share: float, model: str = "reference-500x63") -> None:
    document = json.loads(path.read_text())
    document["end_to_end"] = {"model": model, "scenarios": [
        {"name": "2 workers, prefetch", "workers": 2, "prefetch": True, "engines": [engine],
         "share_of_in_memory": 0.5},
        {"name": "1 worker, sequential", "workers": 1, "prefetch": False, "engines": [engine],
         "share_of_in_memory": 0.6},
        {"name": "1 worker, prefetch", "workers": 1, "prefetch": True, "engines": [engine],
         "share_of_in_memory": share},
    ]}
    path.write_text(json.dumps(document))


def test_command_uses_measured_share(tmp_path, capsys):
    path = results_file(tmp_path, {"lightgbm": engine_entry(50_000, 95_000),
                                   "lleaves": engine_entry(190_000, 300_000)})
    add_end_to_end(path, "lleaves", 0.8)
    output = run_command(["plan", "--results", str(path)], capsys)
    assert "end-to-end speed 80% of in-memory (measured by bench.e2e)" in output
    plan = json.loads(run_command(["plan", "--results", str(path), "--json"], capsys))
    assert plan["assumptions"]["end_to_end_efficiency"] == pytest.approx(0.8)
    override = json.loads(run_command(["plan", "--results", str(path), "--json", "--efficiency", "0.95"],
                                      capsys))
    assert override["assumptions"]["end_to_end_efficiency"] == pytest.approx(0.95)
    assert override["pods"] <= plan["pods"]


@pytest.mark.parametrize(("engine", "model", "share", "expected"), [
    ("lightgbm", "reference-500x63", 0.8, 0.9),  # measured for another engine: the default
    ("lleaves", "small-100x31", 0.8, 0.9),  # measured for another model: the default
    ("lleaves", "reference-500x63", 1.07, 1.0),  # faster than in memory: capped
])
def test_end_to_end_share_needs_same_model(tmp_path, capsys, engine, model, share, expected):
    path = results_file(tmp_path, {"lightgbm": engine_entry(50_000, 95_000),
                                   "lleaves": engine_entry(190_000, 300_000)})
    add_end_to_end(path, engine, share, model)
    plan = json.loads(run_command(["plan", "--results", str(path), "--json"], capsys))
    assert plan["assumptions"]["end_to_end_efficiency"] == pytest.approx(expected)
