#!/usr/bin/env bash
# Install-as-a-user check (run by `make test`): build the wheel, install it with its declared
# dependencies into a throw-away venv, and use it from a folder outside the checkout, so that nothing of the
# source tree (packages, presets, zoo weights, bundled data) can stand in for what the wheel lacks.
set -euo pipefail
PYTHON=${PYTHON:-python3}
checkout=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# build from a copy of the files git tracks or would track, so that no ignored build output of the
# checkout (a stale build/lib) can slip into the wheel
mkdir "$work/src"
git -C "$checkout" ls-files -z --cached --others --exclude-standard \
    | (cd "$checkout" && xargs -0 tar cf - --ignore-failed-read 2>/dev/null) | tar xf - -C "$work/src"
"$PYTHON" -m pip wheel --quiet --no-deps "$work/src" -w "$work/dist" 2>&1 | grep -v "^WARNING: Location" || true
"$PYTHON" -m venv "$work/venv"
# the wheel's declared dependencies (and theirs), hard-linked from the checkout's environment so
# that they are not unpacked again; anything the wheel does not declare stays out
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PYTHON" "$checkout/tests/link_dependencies.py" "$work"/dist/*.whl "$site"
"$work/venv/bin/python" -m pip install --quiet --no-index "$work"/dist/*.whl 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"
bin="$work/venv/bin"
where=$("$bin/python" -c "import accel_sim, os; print(os.path.dirname(accel_sim.__file__))")
case "$where" in "$checkout"*) echo "wheel smoke: accel_sim imported from the checkout ($where)"; exit 1;; esac
"$bin/accel-sim" --help > /dev/null
"$bin/accel-sim" eval --model alexnet --subset 50
cat > tiny.toml <<'TOML'
name = "wheel-smoke"
seed = 1
[model]
zoo = "alexnet"
format = "fixed8"
calibration = 16
[data]
count = 20
profile_count = 16
[hardware]
preset = "edge16-os"
[faults]
site = "weight_memory"
rates = [1e-6]
trials = 1
[[variants]]
name = "relu"
[[variants]]
name = "clipact"
activation = "clipact"
thresholds = "act_max"
TOML
"$bin/accel-sim" campaign run tiny.toml --no-progress --report
test -s results/wheel-smoke/results.h5
echo "wheel smoke: OK ($("$bin/pip" show accel-sim-fi 2>/dev/null | grep -i '^version'), installed at $where)"
