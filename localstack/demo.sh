#!/usr/bin/env bash
# The story `make demo` tells: start the local platform, upload a good file, the
# same file again, and a broken one, then show the lineage.
set -uo pipefail
cd "$(dirname "$0")/.."
dhow=.venv/bin/dhow
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Start the local platform (LocalStack in me-central-1, the topology, the runner)"
$dhow local up || exit 1

step "Upload the sample dataset and follow its events"
$dhow upload localstack/samples/customers.csv --dataset customers --wait || exit 1

step "Upload the same bytes again: ingest is idempotent, nothing new runs"
$dhow upload localstack/samples/customers.csv --dataset customers --wait || exit 1

step "Upload a broken file (CSV text named .parquet): rejected with a reason, nothing deleted"
$dhow upload localstack/samples/broken.parquet --dataset customers --wait
rc=$?
if [ "$rc" -ne 1 ]; then echo "expected the broken upload to be rejected (exit 1), got $rc"; exit 1; fi

step "Summary: lineage of the dataset"
$dhow lineage customers || exit 1
echo
$dhow local status
printf '\nThe platform is still running; try `%s --help`, and stop it with `%s local down`.\n' "$dhow" "$dhow"
