#!/usr/bin/env bash
# Rehearse the delivery pipeline on this machine, job by job, with the same
# make targets the CircleCI jobs run:
#
#   1. lint-test is left to `make test`, which runs this script's test too;
#   2. train:          make pipeline-train     (dvc repro, MLflow on SQLite)
#   3. bake-and-push:  make pipeline-release   (to docker-registry on 127.0.0.1)
#   4. promote:        make pipeline-promote ENV=staging, in a temporary clone
#                      whose origin is a local bare repository, then
#                      `ctr deploy status` against a Kubernetes API stand-in
#                      that plays Argo CD by rendering the pushed overlay.
#
# Nothing outside a temporary folder changes: the clone, registry, MLflow
# store and DVC remote all live there, and it is removed at the end unless
# CI_LOCAL_KEEP=1. Services started here are stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=$root/.venv/bin/python

work=$(mktemp -d "${TMPDIR:-/tmp}/ctr-ci-local.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${CI_LOCAL_KEEP:-}" == 1 ]]; then
    echo "ci-local: kept $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

step() { printf '\nci-local: === %s ===\n' "$*"; }

# Wait until a background service has written its first line to a file.
first_line() {
  local file=$1 pid=$2
  for _ in $(seq 1 200); do
    if [[ -s "$file" ]]; then head -n 1 "$file"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "ci-local: service $pid exited; see $file" >&2; return 1; }
    sleep 0.1
  done
  echo "ci-local: service $pid wrote nothing within 20 s" >&2
  return 1
}

step "repository: a bare origin and a working clone of HEAD"
git clone --quiet --bare "$root" "$work/origin.git"
git clone --quiet "$work/origin.git" "$work/repo"
branch=$(git -C "$work/repo" rev-parse --abbrev-ref HEAD)
export GIT_AUTHOR_NAME=ctr-ci-local GIT_AUTHOR_EMAIL=ctr-ci-local@localhost
export GIT_COMMITTER_NAME=ctr-ci-local GIT_COMMITTER_EMAIL=ctr-ci-local@localhost

step "services: registry and Kubernetes API stand-in on 127.0.0.1"
"$python" -m ctr.testing.registry "$work/registry" >"$work/registry.out" 2>"$work/registry.err" &
pids+=($!)
registry=$(first_line "$work/registry.out" "${pids[-1]}")
"$python" -m ctr.testing.k8s_api --kubeconfig "$work/kubeconfig" \
  --sync-repository "$work/origin.git" --sync-checkout "$work/argocd-checkout" \
  --environment staging --branch "$branch" >"$work/k8s.out" 2>"$work/k8s.err" &
pids+=($!)
first_line "$work/k8s.out" "${pids[-1]}" >/dev/null
echo "registry $registry; kubeconfig $work/kubeconfig"

export MLFLOW_TRACKING_URI="sqlite:///$work/mlflow.db"
mkdir -p "$work/dvc-remote"
cd "$work/repo"

step "data: the raw logs the training pipeline reads"
# CI restores them with `dvc pull` from the S3 remote. Here the Criteo sample
# beside the checkout is used instead (its terms forbid committing it), and
# generated Criteo-format logs are used where no sample is present.
sample="$root/../shared/data/ctr/criteo_dev.tsv.gz"
mkdir -p data/raw/criteo
if [[ -f "$sample" ]]; then
  cp "$sample" data/raw/criteo/
else
  "$python" -m ctr.cli generate-logs data/raw/criteo/generated.tsv --rows 20000
fi

step "train: make pipeline-train"
"$root/.venv/bin/dvc" remote add --local --force --default ci-local "$work/dvc-remote" >/dev/null
make --no-print-directory pipeline-train

step "bake-and-push: make pipeline-release"
make --no-print-directory pipeline-release REGISTRY="$registry"

step "promote: make pipeline-promote ENV=staging"
git push --quiet origin "HEAD:$branch"
make --no-print-directory pipeline-promote ENV=staging PROMOTE_TIMEOUT=120 \
  DEPLOY_ARGS="--kubeconfig $work/kubeconfig --interval 1"

step "history"
"$root/.venv/bin/ctr" deploy history staging
echo "ci-local: the pipeline's jobs passed"
