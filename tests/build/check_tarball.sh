#!/usr/bin/env bash
# Build the collection tarball, install it into an empty path, and check that it has
# what users get (modules, roles, playbooks) and none of the dev files; then that the
# modules resolve by FQCN from the installed copy.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin/ansible-galaxy" collection build "$root" --output-path "$work" --force >/dev/null
tarball=$(ls "$work"/hotelbot-ops-*.tar.gz)
listing=$(tar -tzf "$tarball")
for must in plugins/modules/ecs_release.py plugins/modules/ecs_release_info.py plugins/modules/http_check.py \
            plugins/modules/pg_backup.py plugins/modules/pg_restore.py plugins/modules/pg_check.py \
            plugins/modules/prometheus_gate.py plugins/modules/release_lock.py plugins/module_utils/pg_load.py \
            plugins/module_utils/ecs.py roles/preflight/tasks/main.yml roles/verify/tasks/main.yml roles/db_restore/tasks/main.yml \
            roles/incident_policy/defaults/main.yml monitoring/hotel-voice-bot.rules.yml \
            playbooks/rollback.yml playbooks/backup.yml playbooks/hotpatch.yml playbooks/auto_rollback.yml meta/runtime.yml; do
  grep -qx "$must" <<<"$listing" || { echo "tarball lacks $must"; exit 1; }
done
for mustnot in sandbox/ tests/ benchmarks/ .venv/ .sandbox/ .collections/ Makefile extensions/; do
  if grep -q "^$mustnot" <<<"$listing"; then echo "tarball must not contain $mustnot"; exit 1; fi
done

# Away from the repo's ansible.cfg, whose .collections link already "has" hotelbot.ops.
cd "$work"
printf '[defaults]\ncollections_path = %s\n' "$work/installed" > "$work/ansible.cfg"
export ANSIBLE_CONFIG="$work/ansible.cfg"
"$bin/ansible-galaxy" collection install "$tarball" -p "$work/installed" >/dev/null
for module in ecs_release ecs_release_info http_check pg_restore release_lock prometheus_gate; do
  path=$("$bin/ansible-doc" -j "hotelbot.ops.$module" | "$bin/python" -c 'import json,sys; print(list(json.load(sys.stdin).values())[0]["doc"]["filename"])')
  case "$path" in "$work/installed/"*) ;; *) echo "hotelbot.ops.$module resolved to $path, not the installed copy"; exit 1;; esac
done
# Run one module from the installed copy: a bad cluster name must fail with a plain message.
out=$("$bin/ansible" localhost -c local -e ansible_python_interpreter="$bin/python" -m hotelbot.ops.ecs_release_info \
      -a 'cluster=x service=y region=us-east-1 endpoint_url=http://127.0.0.1:9 max_attempts=1 access_key=AKIDEXAMPLE secret_key=not-a-real-secret-0123' 2>&1 || true)
if ! grep -q "AWS endpoint unreachable" <<<"$out" || grep -q "not-a-real-secret-0123" <<<"$out"; then
  echo "installed module did not run as expected (or printed the secret key):"; echo "$out"; exit 1
fi
echo "tarball $(basename "$tarball"): $(wc -l <<<"$listing") entries, installs, modules resolve from the installed copy"
