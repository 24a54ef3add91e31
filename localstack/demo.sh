#!/usr/bin/env bash
# The story `make demo` tells: start the local platform, upload a good file and
# follow it to a registered model, upload the same file again, one that fails
# validation and one that fails ingest, then show the lineage.
set -uo pipefail
cd "$(dirname "$0")/.."
dhow=.venv/bin/dhow
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Start the local platform (LocalStack in me-central-1, the topology, the runner)"
$dhow local up || exit 1

step "Upload the sample dataset and follow it: validated, trained, gated, registered"
$dhow upload localstack/samples/customers.csv --dataset customers --wait || exit 1
echo "-- the model registry (SageMaker Model Registry API; * marks the champion):"
$dhow models customers || exit 1

step "Upload the same bytes again: ingest is idempotent, nothing new runs"
$dhow upload localstack/samples/customers.csv --dataset customers --wait || exit 1

expect_rejected() {
  "$@"
  rc=$?
  if [ "$rc" -ne 1 ]; then echo "expected this upload to be rejected (exit 1), got $rc"; exit 1; fi
}

step "Upload a file that breaks the customers spec: quarantined with a row-by-row report"
expect_rejected $dhow upload localstack/samples/customers-bad.csv --dataset customers --wait
echo "-- the same report, offline, as a data team would run it before uploading:"
$dhow dataset validate customers localstack/samples/customers-bad.csv

step "Upload a broken file (CSV text named .parquet): refused at ingest, nothing deleted"
expect_rejected $dhow upload localstack/samples/broken.parquet --dataset customers --wait

step "Summary: lineage of the dataset"
$dhow lineage customers || exit 1
echo
$dhow local status
printf '\nThe platform is still running; try `%s --help`, and stop it with `%s local down`.\n' "$dhow" "$dhow"
