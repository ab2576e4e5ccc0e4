#!/usr/bin/env bash
# Run the whole test suite: set up (tools/setup.sh), start a throw-away PostgreSQL server for
# the tests that need one, run ruff and pytest. Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "$0")/asroot.sh"   # root, or once through sudo
cd "$(dirname "$0")/.."
./tools/setup.sh

# A private PostgreSQL cluster on a Unix socket, owned by the postgres user, gone afterwards.
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
pgdir=$(mktemp -d /tmp/litefs-pg.XXXXXX)
chown postgres: "$pgdir"
cleanup() {
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap cleanup EXIT
runuser -u postgres -- "$pgbin/initdb" -A trust -U postgres -D "$pgdir/data" >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-k $pgdir -c listen_addresses='' -c fsync=off -c max_connections=200" start >/dev/null
export LITEFS_TEST_PG="postgresql+psycopg://postgres@/postgres?host=$pgdir"

.venv/bin/ruff check .
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
# The FUSE semantics tests again with --native-writes on every mount (issue 17): the same
# files and deletions whether FUSE or the kernel serves a writable rule folder. This pass
# comes first so that the last line is the whole suite's count.
# (test_fs_native*.py test the switch itself, test_fs_fastloop.py FUSE's own numbering.)
LITEFS_TEST_NATIVE_WRITES=1 .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_fs_core.py tests/test_fs_posix.py tests/test_fs_copyup.py tests/test_fs_policy.py \
  tests/test_fs_units.py tests/test_fs_cli.py tests/test_fs_workload.py tests/test_posix_*.py \
  tests/hostile/test_view_perms.py tests/hostile/test_names_entry.py \
  tests/hostile/test_tmpfs_limit.py
.venv/bin/python -m pytest -q
