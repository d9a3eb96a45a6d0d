"""Capacity plan: pods, partition size, KEDA setting, nodes and cost for a daily scoring batch.

The plan starts from a measured scoring speed per core. That is either the
latest benchmark results (``bench/results.json``, written by ``make bench``)
or the speed a bundle's bake measured (``rows_per_second_per_core`` in the
``compile-report.json`` that ``ctr image bake`` writes beside the bundle
folder, or in the compiled section of a ``bundle.json`` written by
``compile_bundle`` directly). It adds stated assumptions about the cluster: how
long a node takes to start, how long the image pull and the worker's
start-up take, and how much of the in-memory speed a worker keeps end to end. Every
assumption is printed with the plan, so a reader can check or override it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ctr_inference.errors import CtrError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = REPO_ROOT / "bench" / "results.json"

# Largest difference from LightGBM that the worker accepts from an engine,
# as in ctr_inference.engines.PARITY_TOLERANCE (not imported: it pulls numpy).
PARITY_TOLERANCE = 1e-9

# ctr_images.bake.COMPILE_REPORT_FILE: the bake's measurements, beside the bundle folder.
COMPILE_REPORT_FILE = "compile-report.json"

# A spot instance gets a two-minute interruption notice.
SPOT_NOTICE_SECONDS = 120


@dataclass(frozen=True)
class InstanceType:
    """An EC2 instance type a node group may use, with its on-demand hourly price."""

    name: str
    vcpus: int
    memory_gib: float
    usd_per_hour: float


# NOTE: list prices of Linux on-demand instances in us-east-1, as published by
# AWS in 2024; they change and differ by region. Override them with --price.
INSTANCE_TYPES = (
    InstanceType("c6i.xlarge", 4, 8, 0.17),
    InstanceType("c6i.2xlarge", 8, 16, 0.34),
    InstanceType("c6i.4xlarge", 16, 32, 0.68),
    InstanceType("c6a.2xlarge", 8, 16, 0.306),
    InstanceType("c6a.4xlarge", 16, 32, 0.612),
    InstanceType("c7i.2xlarge", 8, 16, 0.357),
    InstanceType("c7a.2xlarge", 8, 16, 0.41056),
    InstanceType("m6i.2xlarge", 8, 32, 0.384),
)


class PlanError(CtrError):
    """The inputs of a capacity plan are missing or invalid."""


@dataclass
class Assumptions:
    """Cluster facts the plan does not measure; each has a command-line option."""

    node_start_seconds: float = 90.0
    image_pull_seconds: float = 30.0
    worker_start_seconds: float = 10.0
    # Used when the benchmark did not measure it for the plan's model and engine.
    end_to_end_efficiency: float = 0.9
    headroom: float = 0.2
    partition_seconds: float = 30.0
    pod_cpus: int = 2
    pod_cpu_request: float = 1.9
    pod_memory_gib: float = 2.0
    node_reserved_cpus: float = 0.3
    node_reserved_memory_gib: float = 1.5
    # Snappy Parquet of the benchmark's generated rows (row_id and 39 float64 features)
    # takes 45 bytes per row; real features with more distinct values take more.
    bytes_per_row: float = 45.0
    max_partition_megabytes: float = 128.0

    def check(self) -> None:
        """Raise PlanError for a value outside its meaningful range."""
        if not 0 < self.end_to_end_efficiency <= 1:
            raise PlanError(f"end-to-end efficiency must be in (0, 1], got {self.end_to_end_efficiency}")
        if not 0 <= self.headroom < 1:
            raise PlanError(f"headroom must be in [0, 1), got {self.headroom}")
        if self.pod_cpus < 1:
            raise PlanError(f"pod CPUs must be at least 1, got {self.pod_cpus}")
        if not 0 < self.pod_cpu_request <= self.pod_cpus:
            raise PlanError(f"pod CPU request must be in (0, {self.pod_cpus}], got {self.pod_cpu_request}")
        if self.bytes_per_row <= 0 or self.max_partition_megabytes <= 0:
            raise PlanError("bytes per row and the maximum partition size must be positive")
        if not 0 < self.partition_seconds < SPOT_NOTICE_SECONDS:
            raise PlanError(f"partition scoring time must be under the {SPOT_NOTICE_SECONDS} s spot "
                            f"notice, got {self.partition_seconds} s")


@dataclass
class Speed:
    """The measured scoring speed the plan is based on."""

    source: str
    model: str
    engine: str
    rows_per_second_per_core: float
    # Rows per second on N threads divided by N times the 1-thread rate.
    parallel_efficiency: float
    measured_on: str
    # End-to-end rows/s per core as a fraction of in-memory, when the benchmark measured it.
    end_to_end_efficiency: float | None = None


@dataclass
class NodePlan:
    """How many nodes of one instance type run the pods, and what they cost."""

    instance_type: str
    vcpus: int
    pods_per_node: int
    nodes: int
    usd_per_hour: float
    usd_per_run: float


@dataclass
class Plan:
    """The capacity plan for one daily batch."""

    rows: float
    deadline_seconds: float
    speed: Speed
    assumptions: Assumptions
    pod_rows_per_second: float
    # Node start, image pull and worker start before the first prediction.
    startup_seconds: float
    # Scoring time the deadline leaves after start-up, headroom and one partition. The pods are sized to it.
    scoring_budget_seconds: float
    # Rows divided by the planned pods' rows per second. Rounding the pods up keeps it within the budget.
    expected_scoring_seconds: float
    pods: int
    partition_rows: int
    partition_megabytes: float
    partition_seconds: float
    messages: int
    keda_messages_per_pod: int
    keda_max_replicas: int
    cores_for_deadline: float
    nodes: list[NodePlan] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_duration(text: str) -> float:
    """Parse ``90s``, ``45m``, ``1h``, ``1h30m`` or plain seconds into seconds.

    Raises:
        PlanError: the text is not such a duration or is not positive.
    """
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise PlanError(f"invalid duration {text!r}: expected for example 1h, 45m, 1h30m or 3600")
        scale = {"h": 3600, "m": 60, "s": 1}
        seconds = sum(float(number) * scale[unit] for number, unit in parts)
    if seconds <= 0:
        raise PlanError(f"duration must be positive, got {text!r}")
    return seconds


def speed_from_results(path: str | Path = DEFAULT_RESULTS, model: str | None = None) -> Speed:
    """Pick the fastest engine that matches LightGBM within 1e-9 for ``model`` in benchmark results.

    Raises:
        PlanError: the file is missing, or has no such model or no usable engine.
    """
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"benchmark results {path} not found: run `make bench` or pass --results")
    results = json.loads(path.read_text())
    name = model or results.get("reference_model")
    entry = next((item for item in results.get("models", []) if item["model"] == name), None)
    if entry is None:
        known = ", ".join(item["model"] for item in results.get("models", []))
        raise PlanError(f"benchmark results {path} have no model {name!r}; measured: {known}")

    usable = {}
    for engine, result in entry["engines"].items():
        if result.get("status") != "ok" or "1" not in result.get("threads", {}):
            continue
        differences = [value for kind, value in result.get("max_abs_diff_by_kind", {}).items()
                       if kind != "scored_rows"]
        if engine != "lightgbm" and (None in differences or max(differences, default=0) > PARITY_TOLERANCE):
            continue
        usable[engine] = result
    if not usable:
        raise PlanError(f"benchmark results {path} have no engine for {name} that matches LightGBM")
    engine, result = max(usable.items(), key=lambda item: item[1]["threads"]["1"]["rows_per_second"])

    single = result["threads"]["1"]["rows_per_second"]
    max_threads = max(result["threads"], key=int)
    efficiency = min(1.0, result["threads"][max_threads]["rows_per_second"] / (int(max_threads) * single))
    machine = results.get("machine", {})
    return Speed(source=str(path), model=name, engine=engine, rows_per_second_per_core=single,
                 parallel_efficiency=efficiency,
                 measured_on=f"{machine.get('cpu_model', 'unknown CPU')}, {results.get('measured_at', '')}",
                 end_to_end_efficiency=measured_end_to_end(results, name, engine))


def measured_end_to_end(results: dict, model: str, engine: str) -> float | None:
    """Return the end-to-end share of in-memory speed that ``bench.e2e`` measured, capped at 1.

    Only a measurement of the same model and engine counts: one worker with
    prefetch, against the in-memory rate measured in the same run.
    """
    e2e = results.get("end_to_end") or {}
    if e2e.get("model") != model:
        return None
    for scenario in e2e.get("scenarios", []):
        if scenario.get("workers") == 1 and scenario.get("prefetch") and scenario.get("engines") == [engine]:
            return min(1.0, float(scenario["share_of_in_memory"]))
    return None


def speed_from_bundle(bundle_dir: str | Path, parallel_efficiency: float = 0.9) -> Speed:
    """Read the speed a bundle's bake measured for its compiled engine, else for LightGBM.

    ``ctr image bake`` keeps the measurements out of the bundle, so that a
    rebake gives the same bundle, and writes them to ``compile-report.json``
    in the bundle folder's parent. A ``bundle.json`` written with the whole
    ``compile_bundle`` section carries them itself. The bake times one thread
    only, so ``parallel_efficiency`` is an assumption.

    Raises:
        PlanError: the bundle has no ``bundle.json`` or no measured speed.
    """
    path = Path(bundle_dir) / "bundle.json"
    if not path.is_file():
        raise PlanError(f"no bundle at {bundle_dir}: bundle.json is missing")
    metadata = json.loads(path.read_text())
    compiled = metadata.get("compiled") or {}
    engine = compiled.get("engine") or "lightgbm"
    measured, source = compiled, path
    report = Path(bundle_dir).parent / COMPILE_REPORT_FILE
    if "rows_per_second_per_core" not in compiled and report.is_file():
        measured, source = json.loads(report.read_text()), report
    speeds = measured.get("rows_per_second_per_core") or {}
    if engine not in speeds:
        raise PlanError(f"bundle {bundle_dir} records no measured speed for {engine}, and {report} "
                        "has none either; bake it with `ctr image bake` or use the benchmark results")
    model = metadata.get("model", {})
    return Speed(source=str(source), model=f"{model.get('name')} version {model.get('version')}",
                 engine=engine, rows_per_second_per_core=float(speeds[engine]),
                 parallel_efficiency=parallel_efficiency,
                 measured_on=(measured.get("baked_on") or {}).get("cpu_model", "the bake machine"))


def make_plan(rows: float, deadline_seconds: float, speed: Speed, assumptions: Assumptions | None = None,
              instance_types: tuple[InstanceType, ...] = INSTANCE_TYPES) -> Plan:
    """Size the Deployment, the partitions and the nodes so ``rows`` are scored within the deadline.

    Raises:
        PlanError: invalid inputs, or a deadline shorter than the start-up of nodes and pods.
    """
    assumptions = assumptions or Assumptions()
    assumptions.check()
    if rows <= 0:
        raise PlanError(f"rows must be positive, got {rows}")

    # Scoring starts after a node has started, pulled the image and loaded the bundle.
    startup = assumptions.node_start_seconds + assumptions.image_pull_seconds + assumptions.worker_start_seconds
    # A one-thread pod runs at the measured 1-thread rate, so only larger pods lose to scaling.
    parallel_efficiency = speed.parallel_efficiency if assumptions.pod_cpus > 1 else 1.0
    pod_rate = (speed.rows_per_second_per_core * assumptions.pod_cpus * parallel_efficiency
                * assumptions.end_to_end_efficiency)
    partition_rows = _partition_rows(
        min(pod_rate * assumptions.partition_seconds,
            assumptions.max_partition_megabytes * 1e6 / assumptions.bytes_per_row))
    partition_seconds = partition_rows / pod_rate
    # The last partition a pod takes may start just before the time runs out.
    scoring_budget = (deadline_seconds - startup) * (1 - assumptions.headroom) - partition_seconds
    if scoring_budget <= 0:
        raise PlanError(
            f"a deadline of {deadline_seconds:.0f} s leaves no scoring time after {startup:.0f} s "
            f"of start-up, {assumptions.headroom:.0%} headroom and one {partition_seconds:.0f} s partition")

    pods = math.ceil(rows / (pod_rate * scoring_budget))
    messages = math.ceil(rows / partition_rows)
    nodes = [_node_plan(instance, pods, assumptions, startup + scoring_budget)
             for instance in instance_types]
    return Plan(
        rows=rows,
        deadline_seconds=deadline_seconds,
        speed=speed,
        assumptions=assumptions,
        pod_rows_per_second=pod_rate,
        startup_seconds=startup,
        scoring_budget_seconds=scoring_budget,
        expected_scoring_seconds=rows / (pods * pod_rate),
        pods=pods,
        partition_rows=partition_rows,
        partition_megabytes=partition_rows * assumptions.bytes_per_row / 1e6,
        partition_seconds=partition_seconds,
        messages=messages,
        # KEDA's SQS scaler requests ceil(messages / target) replicas, so this target
        # reaches `pods` replicas on a full queue and the cap stops it there.
        keda_messages_per_pod=max(1, messages // pods),
        keda_max_replicas=pods,
        cores_for_deadline=rows / deadline_seconds / speed.rows_per_second_per_core,
        nodes=[node for node in nodes if node is not None],
    )


def _partition_rows(rows: float) -> int:
    # Round down to two significant digits, so the size reads well and stays under the limits.
    if rows < 1000:
        return max(1, int(rows))
    scale = 10 ** (int(math.log10(rows)) - 1)
    return int(rows // scale * scale)


def _node_plan(instance: InstanceType, pods: int, assumptions: Assumptions, run_seconds: float):
    by_cpu = (instance.vcpus - assumptions.node_reserved_cpus) // assumptions.pod_cpu_request
    by_memory = (instance.memory_gib - assumptions.node_reserved_memory_gib) // assumptions.pod_memory_gib
    per_node = int(min(by_cpu, by_memory))
    if per_node < 1:
        return None
    nodes = math.ceil(pods / per_node)
    return NodePlan(
        instance_type=instance.name,
        vcpus=instance.vcpus,
        pods_per_node=per_node,
        nodes=nodes,
        usd_per_hour=nodes * instance.usd_per_hour,
        usd_per_run=nodes * instance.usd_per_hour * run_seconds / 3600,
    )


def override_prices(overrides: list[str]) -> tuple[InstanceType, ...]:
    """Apply ``TYPE=USD`` price overrides to the instance table; unknown types are rejected.

    Raises:
        PlanError: an override is not ``TYPE=USD`` or names an unknown type.
    """
    prices = {instance.name: instance for instance in INSTANCE_TYPES}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in prices:
            raise PlanError(f"unknown instance type {name!r} in --price; known: {', '.join(prices)}")
        try:
            price = float(value)
        except ValueError:
            raise PlanError(f"invalid price {value!r} for {name}: expected USD per hour, like 0.34") from None
        prices[name] = InstanceType(name, prices[name].vcpus, prices[name].memory_gib, price)
    return tuple(prices.values())


def render(plan: Plan) -> str:
    """Format a plan as the text ``ctr plan`` prints."""
    speed, assumptions = plan.speed, plan.assumptions
    lines = [
        f"Plan for {plan.rows:,.0f} rows within {plan.deadline_seconds / 60:.0f} min",
        "",
        (f"  pods                      {plan.pods} ({assumptions.pod_cpus} CPUs each, "
        f"{plan.pod_rows_per_second:,.0f} rows/s per pod)"),
        (f"  partition size            {plan.partition_rows:,} rows (about {plan.partition_megabytes:.0f} MB, "
        f"{plan.partition_seconds:.0f} s to score; spot notice is {SPOT_NOTICE_SECONDS} s)"),
        f"  messages                  {plan.messages:,}",
        (f"  KEDA messages per pod     {plan.keda_messages_per_pod} (queueLength), "
        f"maxReplicaCount {plan.keda_max_replicas}"),
        (f"  time budget for scoring   {plan.scoring_budget_seconds / 60:.1f} min "
         f"(deadline minus {plan.startup_seconds:.0f} s start-up, {assumptions.headroom:.0%} headroom "
         f"and one partition)"),
        (f"  expected scoring time     {plan.expected_scoring_seconds / 60:.1f} min at {plan.pods} pods, "
         f"about {(plan.startup_seconds + plan.expected_scoring_seconds) / 60:.0f} min from scale-up to the "
         f"last output"),
        (f"  cores at measured speed   {plan.cores_for_deadline:.1f} "
        f"(rows / deadline / rows per second per core, no overheads)"),
        "",
        "  nodes by instance type (on-demand estimate):",
    ]
    for node in plan.nodes:
        lines.append(f"    {node.instance_type:<13} {node.nodes:>4} nodes x {node.pods_per_node} pods  "
                     f"${node.usd_per_hour:,.2f}/h  ${node.usd_per_run:,.2f} per run")
    lines += [
        "",
        "Speed:",
        (f"  {speed.engine} on {speed.model}: {speed.rows_per_second_per_core:,.0f} rows/s per core, "
        f"parallel efficiency {speed.parallel_efficiency:.2f}"),
        f"  measured on {speed.measured_on} ({speed.source})",
        "Assumptions (override with options):",
        (f"  node start {assumptions.node_start_seconds:.0f} s, image pull {assumptions.image_pull_seconds:.0f} s, "
        f"worker start to first prediction {assumptions.worker_start_seconds:.0f} s"),
        (f"  end-to-end speed {assumptions.end_to_end_efficiency:.0%} of in-memory"
        f"{' (measured by bench.e2e)' if speed.end_to_end_efficiency == assumptions.end_to_end_efficiency else ''}, "
        f"{assumptions.headroom:.0%} of the deadline kept spare for retries and spot reclaims"),
        (f"  pod request {assumptions.pod_cpu_request} CPU / {assumptions.pod_memory_gib} GiB, "
        f"node reserves {assumptions.node_reserved_cpus} CPU / {assumptions.node_reserved_memory_gib} GiB"),
        (f"  {assumptions.bytes_per_row:.0f} bytes per row of Parquet, partitions of at most "
        f"{assumptions.max_partition_megabytes:.0f} MB and {assumptions.partition_seconds:.0f} s of scoring"),
        "  per-vCPU speed of every instance type equal to the benchmark machine's",
        "  prices: us-east-1 on-demand list prices (2024), override with --price TYPE=USD",
    ]
    return "\n".join(lines)
