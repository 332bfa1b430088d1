#!/usr/bin/env bash
# Scheduled CI stage: hotelbot.ops.auto_rollback. Healthy: exit 0, nothing changed. Unhealthy or
# the gate says so: roll back to the last stable release, verify, exit 0 when healthy again.
# The gate cannot decide: by AUTO_ROLLBACK_ON_INCONCLUSIVE, hold (default: exit non-zero so
# someone looks, nothing changed) or rollback.
#   HOTELBOT_INVENTORY              required: the inventory to act on
#   AUTO_ROLLBACK_ON_INCONCLUSIVE   hold (default) | rollback
#   SEVERITY                        P0..P3 (empty: the gate and the health check decide)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
run_playbook hotelbot.ops.auto_rollback \
  "auto_rollback_on_inconclusive=${AUTO_ROLLBACK_ON_INCONCLUSIVE:-}" "severity=${SEVERITY:-}" -- "$@"
