"""Model versions in the MLflow registry: listing them, resolving references and comparing two versions' runs.

A reference names a version of one registered model in any of these forms:
``3``, ``v3``, ``champion``, ``@champion``, ``models:/NAME/3`` or
``models:/NAME@champion`` (the last two may name another model).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field

from ctr_inference.errors import CtrError

# Metrics shown first, in this order; any other metric follows by name.
LEADING_METRICS = (
    "test_auc", "test_logloss", "test_ne", "test_calibration", "test_ece",
    "valid_auc", "valid_logloss", "valid_ne", "valid_calibration", "valid_ece",
    "gate_challenger_logloss", "gate_champion_logloss", "train_rows", "valid_rows", "test_rows", "trees",
)
_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))")


class ModelReferenceError(CtrError):
    """A model reference does not name a registered version."""


@dataclass
class VersionSummary:
    """One model version with its run's metrics, parameters and tags."""

    name: str
    version: str
    run_id: str
    aliases: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # Registration time, ISO 8601 in UTC.
    created: str = ""

    @property
    def label(self) -> str:
        aliases = f" ({', '.join(sorted(self.aliases))})" if self.aliases else ""
        return f"version {self.version}{aliases}"


def resolve(reference: str, model_name: str) -> VersionSummary:
    """Look a reference up in the registry at ``MLFLOW_TRACKING_URI`` and load its run.

    Raises:
        ModelReferenceError: the model, version or alias does not exist.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    name, version, alias = model_name, None, None
    match = _URI.fullmatch(reference)
    if match:
        name, version, alias = match.group("name"), match.group("version"), match.group("alias")
    elif re.fullmatch(r"v?\d+", reference):
        version = reference.lstrip("v")
    else:
        alias = reference.lstrip("@")
    try:
        model_version = (client.get_model_version(name, version) if version
                         else client.get_model_version_by_alias(name, alias))
        run = client.get_run(model_version.run_id)
    except MlflowException as error:
        raise ModelReferenceError(f"{reference!r} is not a version of model {name!r} at "
                                  f"{mlflow.get_tracking_uri()}: {error.message}") from error
    return _summary(model_version, run)


def _summary(model_version, run) -> VersionSummary:
    created = ""
    if model_version.creation_timestamp:
        created = datetime.datetime.fromtimestamp(model_version.creation_timestamp / 1000,
                                                  datetime.UTC).isoformat(timespec="seconds")
    return VersionSummary(
        name=model_version.name, version=str(model_version.version), run_id=model_version.run_id,
        aliases=list(getattr(model_version, "aliases", []) or []),
        metrics=dict(run.data.metrics) if run else {}, params=dict(run.data.params) if run else {},
        tags={k: v for k, v in run.data.tags.items() if k.startswith("ctr.")} if run else {}, created=created,
    )


def list_versions(model_name: str) -> list[VersionSummary]:
    """Return every version of a registered model, oldest first, with its run's metrics.

    Raises:
        ModelReferenceError: the registry has no model of that name.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        known = sorted(model.name for model in client.search_registered_models())
        raise ModelReferenceError(
            f"model {model_name!r} is not registered at {mlflow.get_tracking_uri()}; "
            f"registered models: {', '.join(known) or 'none'}") from error
    # get_model_version fills in the aliases; search results leave them empty (MLflow 3.17 SQL store).
    versions = [client.get_model_version(model_name, found.version)
                for found in client.search_model_versions(f"name = '{model_name}'")]
    summaries = []
    for model_version in sorted(versions, key=lambda v: int(v.version)):
        try:
            run = client.get_run(model_version.run_id) if model_version.run_id else None
        except MlflowException:
            # The run was deleted; the version stays listed without metrics.
            run = None
        summaries.append(_summary(model_version, run))
    return summaries


def render_versions(versions: list[VersionSummary]) -> str:
    """Return the table that ``ctr models list`` prints: version, aliases, registration time, run and AUC."""
    header = ("version", "aliases", "created (UTC)", "run", "test AUC", "valid AUC")
    rows = [(v.version, ", ".join(sorted(v.aliases)) or "-", v.created.replace("+00:00", "") or "-",
             v.run_id or "-", _format(v.metrics.get("test_auc")), _format(v.metrics.get("valid_auc")))
            for v in versions]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.6f}"
    return str(value)


def comparison_rows(a: VersionSummary, b: VersionSummary) -> list[tuple[str, str, str, str]]:
    """Rows of (name, A, B, B - A) for the metrics of either run, leading metrics first."""
    names = [m for m in LEADING_METRICS if m in a.metrics or m in b.metrics]
    names += sorted((set(a.metrics) | set(b.metrics)) - set(names))
    rows = []
    for name in names:
        left, right = a.metrics.get(name), b.metrics.get(name)
        difference = f"{right - left:+.6f}" if left is not None and right is not None else ""
        rows.append((name, _format(left), _format(right), difference))
    return rows


def differing_params(a: VersionSummary, b: VersionSummary) -> list[tuple[str, str, str]]:
    """Parameters whose values differ between the two runs, by name."""
    return [(k, a.params.get(k, "-"), b.params.get(k, "-"))
            for k in sorted(set(a.params) | set(b.params)) if a.params.get(k) != b.params.get(k)]


def render_comparison(a: VersionSummary, b: VersionSummary) -> str:
    """Return the side-by-side table that ``ctr models compare`` prints."""
    header = (a.name if a.name == b.name else "model", f"{a.name} {a.label}" if a.name != b.name else a.label,
              f"{b.name} {b.label}" if a.name != b.name else b.label, "B - A")
    rows = [("run", a.run_id, b.run_id, "")]
    rows += comparison_rows(a, b)
    rows += [("gate decision", a.tags.get("ctr.gate.decision", "-"), b.tags.get("ctr.gate.decision", "-"), "")]
    rows += [("git commit", a.tags.get("ctr.git_commit", "-")[:12], b.tags.get("ctr.git_commit", "-")[:12], "")]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header, *rows]]
    params = differing_params(a, b)
    if params:
        lines += ["", "parameters that differ:"]
        width = max(len(name) for name, _, _ in params)
        lines += [f"  {name.ljust(width)}  {left}  ->  {right}" for name, left, right in params]
    else:
        lines += ["", "parameters: identical"]
    return "\n".join(lines)
