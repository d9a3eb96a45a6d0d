"""The MLflow tracking store that ``ctr`` commands read when ``MLFLOW_TRACKING_URI`` is unset.

``ctr demo`` keeps its MLflow store under ``.ctr/mlflow/``: the SQLite file
``mlflow.db`` and the ``artifacts/`` folder, which ``ctr mlflow-ui`` serves.
MLflow's own default would be ``sqlite:///mlflow.db`` in the current folder,
a new and empty store. So commands that read the registry (``ctr image
bake``, ``ctr image push``, ``ctr models``) open the demo's SQLite file
directly instead, with no server running.

The demo creates its experiment with a ``file://`` artifact location under
``.ctr/mlflow/artifacts/``, so artifacts resolve without a server as well.
An experiment that an MLflow server with ``--serve-artifacts`` created
keeps ``mlflow-artifacts:`` URIs, and only a server resolves those.
``check_artifacts_reachable`` turns that case into a clear error.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ctr_inference.errors import CtrError

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_WORKDIR = Path(".ctr")
PROXIED_ARTIFACTS_SCHEME = "mlflow-artifacts:"


class TrackingStoreError(CtrError):
    """The MLflow tracking store is missing, or cannot serve what a command needs without a server."""


def local_store(workdir: Path = DEFAULT_WORKDIR) -> Path:
    """Return the folder of the demo's MLflow store (``mlflow.db`` and ``artifacts/``)."""
    return (Path(workdir) / "mlflow").resolve()


def local_tracking_uri(workdir: Path = DEFAULT_WORKDIR) -> str:
    """Return the server-less SQLite URI of the demo's store, the file ``ctr mlflow-ui`` serves."""
    return f"sqlite:///{local_store(workdir) / 'mlflow.db'}"


def local_artifact_location(experiment: str, workdir: Path = DEFAULT_WORKDIR) -> str:
    """Return the ``file://`` artifact location of an experiment in the demo's store."""
    return (local_store(workdir) / "artifacts" / experiment).as_uri()


def use_tracking_store(workdir: Path = DEFAULT_WORKDIR) -> str:
    """Point MLflow at ``MLFLOW_TRACKING_URI``, or else at the demo's local store, and log which one.

    The default is written to ``MLFLOW_TRACKING_URI`` in this process's
    environment, so library code that builds its own ``MlflowClient`` uses
    it too. Returns the tracking URI.

    Raises:
        TrackingStoreError: the variable is unset and the local store does not exist.
    """
    uri = os.environ.get(TRACKING_URI_ENV)
    if uri:
        logger.info("MLflow tracking store: %s (from %s)", uri, TRACKING_URI_ENV)
        return uri

    database = local_store(workdir) / "mlflow.db"
    if not database.is_file():
        raise TrackingStoreError(
            f"{TRACKING_URI_ENV} is not set and there is no local MLflow store at {database}; "
            f"run `make demo` or `make train` first, or set {TRACKING_URI_ENV} to your tracking server")
    uri = local_tracking_uri(workdir)
    os.environ[TRACKING_URI_ENV] = uri
    logger.info("MLflow tracking store: %s (the demo's local store; %s is not set)", uri, TRACKING_URI_ENV)
    return uri


def ensure_local_experiment(experiment: str, tracking_uri: str, workdir: Path = DEFAULT_WORKDIR) -> None:
    """Create ``experiment`` with a ``file://`` artifact location in the demo's store, unless it exists.

    ``tracking_uri`` is the server (or file) of the store under ``workdir``.
    An experiment that an MLflow server created earlier keeps its
    ``mlflow-artifacts:`` location; it is left as it is, with a warning.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    existing = client.get_experiment_by_name(experiment)
    if existing is None:
        location = local_artifact_location(experiment, workdir)
        client.create_experiment(experiment, artifact_location=location)
        logger.info("created MLflow experiment %s with artifacts in %s", experiment, location)
    elif existing.artifact_location.startswith(PROXIED_ARTIFACTS_SCHEME):
        logger.warning(
            "MLflow experiment %s keeps its artifacts behind the MLflow server (%s), so `ctr image bake` "
            "needs `make mlflow-ui` running and %s=http://127.0.0.1:5000; delete %s to start a store "
            "that works without a server", experiment, existing.artifact_location, TRACKING_URI_ENV,
            local_store(workdir))


def check_artifacts_reachable(model_name: str, version: str) -> None:
    """Raise a clear error when a model version's artifacts need an MLflow server that is not in use.

    Only a server-less tracking URI (a database file) is checked; an
    unknown model or version is left for the caller's own lookup to report.

    Raises:
        TrackingStoreError: the run stores artifacts under ``mlflow-artifacts:``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        return
    client = mlflow.MlflowClient()
    try:
        if str(version).isdigit():
            model_version = client.get_model_version(model_name, str(version))
        else:
            model_version = client.get_model_version_by_alias(model_name, str(version).removeprefix("@"))
        artifact_uri = client.get_run(model_version.run_id).info.artifact_uri
    except MlflowException:
        return
    if artifact_uri.startswith(PROXIED_ARTIFACTS_SCHEME):
        raise TrackingStoreError(
            f"model {model_name} version {model_version.version} stores its artifacts at {artifact_uri}, "
            f"which only an MLflow server can read, but the tracking URI is the database file {uri}; "
            f"start a server on this store (`make mlflow-ui` serves the demo's) and rerun with "
            f"{TRACKING_URI_ENV}=http://127.0.0.1:5000")
