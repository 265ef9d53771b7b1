#!/usr/bin/env bash
# Install the project into .venv/ at the repo root from the committed uv.lock, and make `source .venv/bin/activate`
# export what Dagster's CLI needs (DESIGN.md §7: `dagster job execute` reads neither pyproject nor workspace.yaml).
set -euo pipefail
with_test_deps=0
for arg in "$@"; do
  case "$arg" in
    # Debian packages the tests need: chromium for the UI test (tests/test_ui.py), the PostgreSQL server for the
    # production instance test (tests/deploy/test_postgres.py), openssh-server and rsync for the remote robot node
    # test (tests/inference/test_remote_node.py: deploy: rsync over a real sshd).
    --with-test-deps) with_test_deps=1 ;;
    *) echo "usage: $0 [--with-test-deps]" >&2; exit 2 ;;
  esac
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# lerobot 0.6 requires Python 3.12. Take the machine's own build: $PYTHON, python3.12 on PATH (a pyenv shim on PATH
# exists even when 3.12 is not the selected version, so each candidate is run, not just looked up), a pyenv or
# uv-managed install. Never download one: uv's own interpreters come from GitHub, which a lab's node may not reach.
is_312() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; }
python=""
for candidate in ${PYTHON:-} python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 \
    "$HOME"/.local/share/uv/python/cpython-3.12*/bin/python3.12 python3; do
  if is_312 "$candidate"; then python="$(command -v "$candidate")"; break; fi
done
if [ -z "$python" ]; then
  echo "Python 3.12 required (lerobot 0.6): install it (apt, pyenv install 3.12, or your distribution's build)," \
    "or point PYTHON at one" >&2
  exit 1
fi
echo "==> Python: $python"

uv_version="0.13.9"
if ! "$python" -m uv --version 2>/dev/null | grep -q "$uv_version"; then
  echo "==> installing uv $uv_version"
  "$python" -m pip install --quiet --user "uv==$uv_version"
fi
echo "==> uv sync (.venv/)"
"$python" -m uv sync --frozen --python "$python" ${TATBOT_EXTRAS:+--extra "$TATBOT_EXTRAS"}

activate=".venv/bin/activate"
marker="# tatbot_pipeline environment"
version="$marker (2)"
if ! grep -qF "$version" "$activate"; then
  # An older block (always the last thing in the file) is replaced, so re-running setup updates it.
  sed -i "/^$marker/,\$d" "$activate"
  cat >>"$activate" <<ACT
$version
export DAGSTER_HOME="$root"
export DAGSTER_MODULE_NAME=tatbot_pipeline.definitions
export TATBOT_PIPELINE_HOME="\${TATBOT_PIPELINE_HOME:-$root/.tatbot}"
export HF_HUB_OFFLINE=1
# DAGSTER_MODULE_NAME is for \`dagster job execute\` (it reads neither pyproject.toml nor workspace.yaml).
# \`dagster dev\` hangs when it is set, and \`dagster job launch\` would name the run's code location after the
# module, which the daemon (loading workspace.yaml: location tatbot_pipeline) cannot find: both run without it.
dagster() {
  case "\${1:-} \${2:-}" in
    "dev "*) env -u DAGSTER_MODULE_NAME dagster "\$@" ;;
    "job launch") shift 2; env -u DAGSTER_MODULE_NAME dagster job launch -w "$root/workspace.yaml" "\$@" ;;
    *) command dagster "\$@" ;;
  esac
}
ACT
fi

apt_missing=()
if [ "$with_test_deps" = 1 ]; then
  command -v chromium >/dev/null || apt_missing+=(chromium)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || apt_missing+=(postgresql)
  [ -x /usr/sbin/sshd ] || apt_missing+=(openssh-server)
  command -v rsync >/dev/null || apt_missing+=(rsync)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
  echo "==> installing Debian packages for the tests: ${apt_missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
echo "==> installed. Activate with: source .venv/bin/activate"
