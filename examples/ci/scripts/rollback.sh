#!/usr/bin/env bash
# CI stage: roll the Hotel Voice Bot back (hotelbot.ops.rollback). Exit 0 only when the rollback
# (or the no-op a severity calls for) was done and verified.
#   HOTELBOT_INVENTORY    required: the inventory to act on
#   ROLLBACK_TARGET       last_stable (default) | previous | <revision>
#   ROLLBACK_SCOPE        app (default) | db | app+db (with ROLLBACK_DB_BACKUP)
#   ROLLBACK_DB_BACKUP    the backup to restore
#   SEVERITY              P0..P3: the runbook's decision matrix
#   ROLLBACK_APPROVED_BY  who approved (a production inventory needs it; e.g. the pipeline's user)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
run_playbook hotelbot.ops.rollback \
  "rollback_target=${ROLLBACK_TARGET:-}" "rollback_scope=${ROLLBACK_SCOPE:-}" \
  "rollback_db_backup=${ROLLBACK_DB_BACKUP:-}" "severity=${SEVERITY:-}" \
  "rollback_approved=$(approved_when "${ROLLBACK_APPROVED_BY:-}")" "rollback_approved_by=${ROLLBACK_APPROVED_BY:-}" \
  -- "$@"
