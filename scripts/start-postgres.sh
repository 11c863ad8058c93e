#!/usr/bin/env bash
# Installs Debian's PostgreSQL when it is absent, starts its server (Debian's cluster `main`) and makes
# the role the monitor's tests use (it may create databases: each test makes its own). Prints
# the URL to put in LMFUSE_TEST_POSTGRES:
#   export LMFUSE_TEST_POSTGRES="$(bash scripts/start-postgres.sh)"
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  $SUDO pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | grep -q "^$version main .* online"; then
  $SUDO pg_ctlcluster "$version" main start >&2
fi
psql_admin() { $SUDO -u postgres psql -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(id -u)" = 0 ]; then
  psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -qAt $(printf '%q ' "$@")"; }
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'lmfuse_test'")" != 1 ]; then
  psql_admin -c "CREATE ROLE lmfuse_test LOGIN CREATEDB PASSWORD 'lmfuse_test'" >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
echo "postgres://lmfuse_test:lmfuse_test@127.0.0.1:$port/postgres"
