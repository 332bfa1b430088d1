#!/usr/bin/env bash
# CI stage: ship a hot-patch (hotelbot.ops.hotpatch): staging, production, then the Prometheus
# gate watches. Exit 0 only when the gate stayed healthy and the release was marked stable; when
# the gate (or a verification) says roll back, the playbook rolls back by itself and exits
# non-zero, and so does this stage.
#   HOTELBOT_INVENTORY    required: the inventory to act on
#   HOTPATCH_CHANGE_ID    required: the approved change (e.g. the merge request)
#   HOTPATCH_IMAGE        the image this pipeline built (or HOTPATCH_REVISION)
#   HOTPATCH_TESTS_PASSED true when the test stage passed (set it from the pipeline: this stage
#                         needs the test stage, so reaching it means they did)
#   HOTPATCH_APPROVED_BY  who approved (a production inventory needs it)
#   HOTPATCH_WATCH_FOR    how long the gate watches (default: the inventory's hotelbot_gate_watch_for)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
: "${HOTPATCH_CHANGE_ID:?set HOTPATCH_CHANGE_ID to the change being shipped}"
run_playbook hotelbot.ops.hotpatch \
  "hotpatch_change_id=$HOTPATCH_CHANGE_ID" "hotpatch_image=${HOTPATCH_IMAGE:-}" \
  "hotpatch_revision=${HOTPATCH_REVISION:-}" "hotpatch_tests_passed=${HOTPATCH_TESTS_PASSED:-false}" \
  "hotpatch_watch_for=${HOTPATCH_WATCH_FOR:-}" \
  "hotpatch_approved=$(approved_when "${HOTPATCH_APPROVED_BY:-}")" "hotpatch_approved_by=${HOTPATCH_APPROVED_BY:-}" \
  -- "$@"
