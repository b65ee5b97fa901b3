#!/usr/bin/env bash
# Install PostgreSQL's server binaries (initdb, pg_ctl, postgres) from the Debian packages,
# for the tests that run a real server (tests/postgres_server.py starts and stops it).
# Idempotent and quick when they are already there; starts no server itself.
set -euo pipefail

have_binaries() {
  local bindir
  for bindir in /usr/lib/postgresql/*/bin; do
    if [ -x "$bindir/initdb" ] && [ -x "$bindir/pg_ctl" ] && [ -x "$bindir/postgres" ]; then
      echo "$bindir"
      return 0
    fi
  done
  return 1
}

if bindir=$(have_binaries); then
  echo "postgres: binaries present in $bindir"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "postgres: not root and no sudo; install the 'postgresql' package by hand" >&2
  exit 1
fi

echo "postgres: installing the Debian 'postgresql' package"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
# Installing the package must not start a cluster service: the tests run their own server.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod +x "$policy"
  made_policy=1
fi
set +e
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql
status=$?
set -e
if [ "$made_policy" -eq 1 ]; then
  "${sudo[@]}" rm -f "$policy"
fi
if [ "$status" -ne 0 ]; then
  echo "postgres: apt-get install postgresql failed ($status)" >&2
  exit "$status"
fi

if ! bindir=$(have_binaries); then
  echo "postgres: installed, but no initdb/pg_ctl/postgres under /usr/lib/postgresql/*/bin" >&2
  exit 1
fi
echo "postgres: binaries installed in $bindir"
