#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs them.
# - redis-server (Debian package) when missing: the test session starts its own
#   on a free port for the cross-instance tests;
# - chromium (Debian package) when missing: the console's browser tests drive a
#   headless one over its DevTools protocol (they skip, saying why, without it);
# - espeak-ng and sox (Debian packages) when missing: real speech for the live-session
#   examples' tests (they skip without them);
# - a virtual environment in .venv with exactly the locked set of packages
#   (requirements.lock, hash-checked; refresh it with scripts/lock.sh), then the
#   project itself in editable mode without resolving anything again;
# - pytest (which also runs ruff and mypy, see tests/test_lint.py).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    # The package starts a system instance on 6379; the tests never use it.
  else
    echo "redis-server is missing: install it (Debian: apt-get install redis-server)" >&2
    exit 1
  fi
fi

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (Debian package, for the console's browser tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: the console's browser tests will skip (Debian: apt-get install chromium)" >&2
  fi
fi

if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v sox >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing espeak-ng and sox (Debian packages, real speech for the live-session examples)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null
  else
    echo "espeak-ng or sox is missing: the speech examples' tests will skip (Debian: apt-get install espeak-ng sox)" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check \
  --require-hashes --no-deps -r requirements.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/python -m pip check --disable-pip-version-check
exec .venv/bin/python -m pytest -q "$@"
