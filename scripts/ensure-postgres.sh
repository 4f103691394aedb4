#!/usr/bin/env bash
# Makes sure the PostgreSQL server programs (initdb, pg_ctl) that the tests and
# `syncer demo` start a throwaway cluster with are installed. Installs Debian's
# `postgresql` package when they are missing, and Debian's `pgbouncer` (the
# tests run the run lease behind a transaction-mode PgBouncer). Does nothing when
# TEST_DATABASE_URL (tests) or DATABASE_URL (demo) points at a server already.
set -euo pipefail

if [ -n "${TEST_DATABASE_URL:-}" ] && [ "${1:-}" = "test" ]; then
  exit 0
fi
if [ -n "${DATABASE_URL:-}" ] && [ "${1:-}" = "demo" ]; then
  exit 0
fi

find_initdb() {
  command -v initdb 2>/dev/null && return 0
  ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 | grep . && return 0
  return 1
}

find_pgbouncer() {
  command -v pgbouncer 2>/dev/null && return 0
  ls /usr/sbin/pgbouncer 2>/dev/null && return 0
  return 1
}

want=""
find_initdb >/dev/null || want="postgresql"
if [ "${1:-}" = "test" ] && ! find_pgbouncer >/dev/null; then
  want="$want pgbouncer"
fi
if [ -z "$want" ]; then
  exit 0
fi

echo "installing Debian's packages:$want (PostgreSQL server programs / pgbouncer not found)..." >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "error: not root and no sudo: install PostgreSQL yourself (apt-get install postgresql)," >&2
    echo "       or set TEST_DATABASE_URL to a server the tests may create schemas in." >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: apt-get not found: install PostgreSQL 13 or newer with your package manager," >&2
  echo "       or set TEST_DATABASE_URL to a server the tests may create schemas in." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The package's post-install creates a default cluster we do not use; tests and
# the demo start their own throwaway cluster as the 'postgres' user.
# pgbouncer's post-install does not start it here; the tests start their own.
$SUDO apt-get install -y -qq $want >/dev/null
if ! find_initdb >/dev/null; then
  echo "error: postgresql installed but initdb still not found under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "PostgreSQL: $(find_initdb)" >&2
if [ "${1:-}" = "test" ]; then
  find_pgbouncer >/dev/null || { echo "error: pgbouncer installed but not found" >&2; exit 1; }
  echo "pgbouncer: $(find_pgbouncer)" >&2
fi
