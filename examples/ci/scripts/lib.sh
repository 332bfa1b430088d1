# Sourced by the stage scripts beside it (not run on its own).
# shellcheck shell=bash

# Refuse to run against no hosts: ansible-playbook exits 0 when the inventory is missing or
# matches nothing, and the stage would pass having done nothing.
require_hosts() {
  : "${HOTELBOT_INVENTORY:?set HOTELBOT_INVENTORY to the inventory this stage acts on (e.g. inventory/production)}"
  local group=${HOTELBOT_HOSTS:-hotelbot} count
  if [ ! -e "$HOTELBOT_INVENTORY" ]; then
    echo "HOTELBOT_INVENTORY=$HOTELBOT_INVENTORY does not exist; nothing was changed" >&2
    exit 2
  fi
  count=$(ansible -i "$HOTELBOT_INVENTORY" "$group" --list-hosts 2>/dev/null | sed -n 's/^ *hosts (\([0-9]*\)):.*/\1/p')
  if [ "${count:-0}" -eq 0 ]; then
    echo "inventory $HOTELBOT_INVENTORY has no host in $group; nothing was changed" >&2
    exit 2
  fi
}

# Extra vars as one JSON document from NAME=VALUE arguments (values may hold spaces and quotes,
# which `-e name=value` would split); empty values are left out so the playbook's defaults apply.
extra_vars() {
  python3 -c 'import json, sys
pairs = (a.split("=", 1) for a in sys.argv[1:])
print(json.dumps({k: v for k, v in pairs if v}))' "$@"
}

# The stage itself: run_playbook PLAYBOOK NAME=VALUE... -- ARG... runs the collection's PLAYBOOK
# on HOTELBOT_INVENTORY (refused when it has no hosts) with the pairs as its extra vars, and the
# arguments after -- (the stage's own "$@") passed to ansible-playbook as they are.
run_playbook() {
  local playbook=$1 pairs=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    pairs+=("$1")
    shift
  done
  [ $# -gt 0 ] && shift
  require_hosts
  ansible-playbook -i "$HOTELBOT_INVENTORY" "$playbook" -e "$(extra_vars "${pairs[@]}")" "$@"
}

# "true" when an approver is named (a production inventory needs one), else "false".
approved_when() {
  if [ -n "$1" ]; then echo true; else echo false; fi
}
