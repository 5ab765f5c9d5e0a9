#!/usr/bin/env bash
# Regenerates requirements.lock: the exact versions (with their hashes) of every
# package that the hub, the tests (extra `test`) and the benchmark figures
# (extra `bench`) install, resolved from pyproject.toml's ranges by uv.
#
# Refresh it on purpose: when pyproject.toml's dependencies change (the lock
# test in tests/test_lock.py fails until you do), or to take newer releases
# (then run `bash scripts/test.sh` and commit the lock with what it needed).
# By default the versions already locked are kept where they still satisfy
# pyproject.toml, so a rerun without changes rewrites the same file;
# `--upgrade` takes the newest release of everything.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -m uv --version 2>/dev/null | grep -q "uv $UV_VERSION"; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi

# --universal: one lock for every platform and Python >= 3.11 (markers kept);
# --generate-hashes: pip installs it with --require-hashes.
exec .venv/bin/python -m uv pip compile pyproject.toml \
  --extra test --extra bench \
  --universal --python-version 3.11 \
  --generate-hashes \
  --custom-compile-command 'bash scripts/lock.sh' \
  --output-file requirements.lock \
  --quiet \
  "$@"
