#!/usr/bin/env bash
# CI for the Python bindings, from a fresh clone on a fresh machine: a new virtual
# environment, the test tools, the extension built and installed the way users install
# it (`pip install ./python`, maturin as the build backend), then the tests and a smoke
# run of the benchmark. Needs python3 (3.9 or later) with venv and pip, and cargo.
set -euo pipefail
cd "$(dirname "$0")"
python=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== python: virtual environment ($("$python" --version))"
"$python" -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install --quiet maturin pytest hypothesis numpy

echo "== python: pip install ./python"
(cd .. && python -m pip install --quiet ./python)

echo "== python: pytest"
# From another directory, so that the installed package is what gets imported.
(cd "$work" && python -m pytest -q -p no:cacheprovider "$OLDPWD/tests")

echo "== python: bench.py smoke run (py-lmdb left out unless installed)"
python bench.py --entries 2000 --repeat 1 --dir "$work"
