#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the end-to-end tests need (PostgreSQL 15
# server binaries and pgbench for the database tests, python3-venv for the S3 and SMTP test
# servers, openssl and script, attr, acl and libcap2-bin for the extended-attribute tests), then
# runs every test of the workspace. The harness itself creates the moto (S3) and aiosmtpd (SMTP)
# virtualenvs and starts a throwaway PostgreSQL cluster, S3 server and SMTP servers per test
# binary; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need_apt+=(postgresql); fi
if ! ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1; then need_apt+=(postgresql-contrib); fi
if ! command -v pg_dump >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then need_apt+=(postgresql-client); fi
# Extended attributes, ACLs and capabilities for the file-system fidelity tests.
if ! command -v setfattr >/dev/null 2>&1; then need_apt+=(attr); fi
if ! command -v setfacl >/dev/null 2>&1; then need_apt+=(acl); fi
if ! command -v setcap >/dev/null 2>&1; then need_apt+=(libcap2-bin); fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
# The SMTP alert tests make a CA and a server certificate with openssl; the progress tests run
# coffer under a pseudo-terminal with script (util-linux).
if ! command -v openssl >/dev/null 2>&1; then need_apt+=(openssl); fi
if ! command -v script >/dev/null 2>&1; then need_apt+=(bsdutils); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "tests/run.sh: installing ${need_apt[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "tests/run.sh: please install: ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
fi

exec cargo test --workspace --locked "$@"
