#!/usr/bin/env bash
# The Python package (python/): builds the abi3 wheel with maturin, installs it into a project-local
# virtualenv (.venv-python/, made here with pinned tools from PyPI), then checks the stubs against
# the extension (mypy.stubtest), types (mypy --strict on the package, the tests and the example), lint
# and format (ruff), and runs the pytest suite against real `consul agent -dev` processes.
#   PYTHON=python3.12 bash scripts/test-python.sh    # another interpreter (>= 3.10)
#   PYTEST_ARGS="-k fork -x" bash scripts/test-python.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

pins=(
  "maturin==1.16.0"
  "pytest==9.2.0"
  "pytest-asyncio==1.5.0"
  "mypy==2.4.1"
  "ruff==0.17.5"
  "py-consul==1.8.0"
)
venv=$root/.venv-python
py=${PYTHON:-$(command -v python3.11 || command -v python3)}

step "virtualenv $venv ($("$py" --version 2>&1))"
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$py ${pins[*]}" ] || [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q "${pins[@]}"
  echo "$py ${pins[*]}" >"$venv/.pins"
fi
export VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH

step "Consul"
CONSUL_BIN=$(bash scripts/install-consul.sh | tail -n 1)
export CONSUL_BIN

step "maturin build (the abi3 wheel, dev profile) and pip install"
wheels=$root/target/python-wheels
rm -rf "$wheels"
maturin build --profile dev -m python/Cargo.toml --out "$wheels" --interpreter "$venv/bin/python" --locked
python -m pip install -q --force-reinstall --no-deps "$wheels"/consul_lock_rs-*.whl

step "stubtest (python/pysrc/consul_lock/_native.pyi against the extension)"
(cd /tmp && python -m mypy.stubtest consul_lock._native)

step "mypy --strict (package, tests, example, bench)"
(cd python && mypy --strict pysrc/consul_lock tests ../examples/python ../benches/python)

step "ruff check and ruff format --check"
(cd python && ruff check pysrc tests ../examples/python ../benches/python && ruff format --check pysrc tests ../examples/python ../benches/python)

step "pytest (real Consul dev agents)"
# Tests run from outside the source tree, so `import consul_lock` is the installed wheel.
# pytest exits 5 when it collected no test: that is a failure here too.
(cd python/tests && python -m pytest -p no:cacheprovider -q ${PYTEST_ARGS:-} .)
