#!/usr/bin/env bash
# CI step: install what the stages need on a fresh runner - ansible-core, the collection's Python
# requirements and the collection itself (by default from the checkout this script is in).
#   HOTELBOT_COLLECTION      what to install: a directory, a tarball, or hotelbot.ops:<version> from Galaxy
#   ANSIBLE_COLLECTIONS_PATH where (first entry; default ~/.ansible/collections)
# The database stages also need pg_dump/pg_restore/psql (bindep.txt: postgresql-client on Debian/Ubuntu).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
source=${HOTELBOT_COLLECTION:-$root}
dest=${ANSIBLE_COLLECTIONS_PATH:-$HOME/.ansible/collections}
dest=${dest%%:*}
python3 -m pip install -q "ansible-core>=2.19.14,<2.20" -r "$root/requirements.txt"
ansible-galaxy collection install --force -p "$dest" "$source"
ansible-galaxy collection list hotelbot.ops -p "$dest" >/dev/null
echo "hotelbot.ops installed in $dest"
