#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection laid out as ansible_collections/hotelbot/ops.
# Usage: tests/sanity/run.sh [ansible-test sanity options...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.venv/bin"
python_version=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Seed ansible-test's pip bootstrap cache (its download host is unreachable here).
pip_version=$(grep -oP "pip='\K[0-9.]+" "$("$bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py" | head -1)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
[ -s "$cache" ] || cp "$root/tests/sanity/get_pip_offline.py" "$cache"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/hotelbot/ops"
mkdir -p "$dest"
(cd "$root" && git ls-files -co --exclude-standard | grep -v '^\.collections/' | tar -cf - -T - ) | tar -xf - -C "$dest"
cd "$dest"
# ansible-test lists files through git when it finds a repository.
git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity
"$bin/ansible-test" sanity --python "$python_version" --color no "$@"
