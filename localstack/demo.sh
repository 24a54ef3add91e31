#!/usr/bin/env bash
# The story `make demo` tells: start the local platform, upload a good file and
# follow it to a registered model, upload the same file again, one that fails
# validation and one that fails ingest; the model is deployed and serves; a drift
# check finds nothing, then drift after shifted data is replayed, alerts and skips
# the retrain, since no data came after the champion's (no_new_data); then the lineage.
set -uo pipefail
cd "$(dirname "$0")/.."
dhow=.venv/bin/dhow
# A deployment schedule's minute lasts 5 s on the local router (60 s is the default).
export DHOW_LOCAL_MINUTE_SECONDS="${DHOW_LOCAL_MINUTE_SECONDS:-5}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

CLOUD="${CLOUD:-aws}"
case "$CLOUD" in
  aws) platform="LocalStack in me-central-1, the topology, the runner playing Lambda" ;;
  azure) platform="Azurite for uaenorth, the topology, the runner playing the Functions host and Event Grid" ;;
  *) echo "CLOUD must be aws or azure, not $CLOUD"; exit 2 ;;
esac
step "Start the local platform ($platform)"
# From an empty platform, so the story reads the same on every run.
$dhow local down > /dev/null
$dhow local up --cloud "$CLOUD" || exit 1

step "Upload the sample dataset and follow it: validated, trained, gated, registered"
$dhow upload localstack/samples/customers.csv --dataset customers --wait || exit 1
echo "-- the model registry ($([ "$CLOUD" = aws ] && echo "SageMaker Model Registry API" || echo "rows of the lineage table"); * marks the champion):"
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

step "The approved model is deployed by itself: the local router serves it"
wait_deployed() {
  for _ in $(seq 1 60); do
    if $dhow deploy status customers --json | .venv/bin/python -c \
      'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["traffic"] and d["history"] and d["history"][0]["status"]=="completed" else 1)'; then
      return 0
    fi
    sleep 1
  done
  echo "the deployment did not complete in 60 s"; return 1
}
wait_deployed || exit 1
$dhow deploy status customers || exit 1


step "Predict: the 400 rows of the sample through POST /datasets/customers/predict"
$dhow predict customers localstack/samples/customers.csv --batch-rows 50 || exit 1
echo "-- a wrong type is refused with a 422 that names the column:"
curl -s -X POST http://127.0.0.1:${DHOW_ROUTER_PORT:-4570}/datasets/customers/predict -H 'content-type: application/json' \
  -d '{"customer_id":"X","age":"forty","tenure_months":3,"monthly_spend_aed":12.5,"support_calls":1,"segment":"gold","emirate":"dubai","has_mobile_app":true}'
echo

wait_captured() {
  for _ in $(seq 1 20); do
    n=$($dhow captures customers --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["total"])')
    [ "$n" -ge "$1" ] && return 0
    sleep 1
  done
  echo "only $n rows were captured, expected $1"; return 1
}
step "Inference capture: the rows just served, as the drift check will read them"
wait_captured 400 || exit 1
$dhow captures customers --limit 3 || exit 1

step "Drift check on the captured inputs against the model's training sample: no drift"
$dhow drift run customers || exit 1

step "A campaign brings in different customers: replay 400 shifted rows, check again"
$dhow predict customers localstack/samples/customers-shifted.csv --batch-rows 50 || exit 1
wait_captured 800 || exit 1
expect_drift() {
  "$@"
  rc=$?
  if [ "$rc" -ne 1 ]; then echo "expected drift (exit 1), got $rc"; exit 1; fi
}
expect_drift $dhow drift run customers
echo "-- the alert on-call got ($([ "$CLOUD" = aws ] && echo "the alerts topic's local subscriber queue" || echo "the alerts queue")):"
$dhow local alerts --wait 10 || exit 1

echo "-- the spec's policy is retrain, but nothing was uploaded since v1 learnt: retraining on v1's own rows would change nothing, so it is skipped, and the check's lineage says why:"
skipped=$($dhow lineage customers --json | .venv/bin/python -c '
import json, sys
rows = [r for r in json.load(sys.stdin)["records"] if r["kind"] == "drift" and r["attributes"].get("skipped")]
print(rows[-1]["attributes"]["skipped"]["reason"] if rows else "")')
[ "$skipped" = no_new_data ] || { echo "expected the retrain to be skipped as no_new_data, got '$skipped'"; exit 1; }
echo "retrain skipped: $skipped"

echo "-- checked again: still drifting, still no new data (no retrain, and no cooldown spent):"
expect_drift $dhow drift run customers
$dhow drift status customers --limit 3 || exit 1

case "$CLOUD" in
  aws) judge="the router, playing CodeDeploy and the candidate's two CloudWatch alarms" ;;
  azure) judge="the deploy function's stepped rollout, reading the router's counts where it reads Azure Monitor in the cloud" ;;
esac
step "A broken model is approved: canary at 10%, judged by $judge, rolled back by itself"
.venv/bin/python -m dhow_local.broken_canary customers localstack/samples/customers.csv || exit 1
wait_rolled_back() {
  for _ in $(seq 1 30); do
    if $dhow deploy status customers --json | .venv/bin/python -c \
      'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["history"] and d["history"][0]["status"]=="rolled_back" else 1)'; then
      return 0
    fi
    sleep 1
  done
  echo "the broken canary was not rolled back in 30 s"; return 1
}
wait_rolled_back || exit 1
$dhow deploy status customers || exit 1

step "Summary: lineage of the dataset"
$dhow lineage customers || exit 1
echo
$dhow local status
printf '\nThe platform is still running; try `%s --help`, and stop it with `%s local down`.\n' "$dhow" "$dhow"
