#!/usr/bin/env bash
# Install the project into .venv/ at the repo root from the committed uv.lock, and make `source .venv/bin/activate`
# export what Dagster's CLI needs (DESIGN.md §7: `dagster job execute` reads neither pyproject nor workspace.yaml).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version}"'

uv_version="0.13.9"
if ! "$python" -m uv --version 2>/dev/null | grep -q "$uv_version"; then
  echo "==> installing uv $uv_version"
  "$python" -m pip install --quiet --user "uv==$uv_version"
fi
echo "==> uv sync (.venv/)"
"$python" -m uv sync --frozen --python "$python" ${TATBOT_EXTRAS:+--extra "$TATBOT_EXTRAS"}

activate=".venv/bin/activate"
marker="# tatbot_pipeline environment"
if ! grep -q "$marker" "$activate"; then
  cat >>"$activate" <<ACT
$marker
export DAGSTER_HOME="$root"
export DAGSTER_MODULE_NAME=tatbot_pipeline.definitions
export TATBOT_PIPELINE_HOME="\${TATBOT_PIPELINE_HOME:-$root/.tatbot}"
export HF_HUB_OFFLINE=1
ACT
fi
echo "==> installed. Activate with: source .venv/bin/activate"
