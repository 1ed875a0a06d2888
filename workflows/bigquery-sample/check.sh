#!/usr/bin/env bash
# Reads the orders and their summary back with the bq CLI (the same identity as bq>) and fails
# when the summary does not add up to the orders.
set -euo pipefail
: "${GCP_PROJECT:?gcp_project is not set}" "${DATASET:?dataset is not set}"

# The last CSV line of a one-row query.
one_row() { bq --quiet --headless --project_id="$GCP_PROJECT" query --nouse_legacy_sql --format=csv "$1" | tail -n 1; }

orders=$(one_row "SELECT COUNT(*), SUM(amount) FROM \`$GCP_PROJECT.$DATASET.orders\`")
summary=$(one_row "SELECT SUM(orders), SUM(total) FROM \`$GCP_PROJECT.$DATASET.orders_by_region\`")
echo "orders (count,total): $orders"
echo "orders_by_region (count,total): $summary"
if [ "$orders" != "$summary" ] || [ "$orders" = "0,0" ]; then
  echo "check failed: the summary ($summary) does not match the orders ($orders)" >&2
  exit 1
fi
echo "check passed"
