#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection laid out as ansible_collections/hotelbot/ops.
# Usage: [SANITY_VENV=.venv-core221] tests/sanity/run.sh [ansible-test sanity options...]
# SANITY_VENV is the venv whose ansible-test runs (default .venv, ansible-core 2.19); the
# Makefile's sanity-core220/sanity-core221 targets build the newer ones.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${SANITY_VENV:-.venv}
case "$venv" in /*) ;; *) venv="$root/$venv" ;; esac
bin="$venv/bin"
[ -x "$bin/ansible-test" ] || { echo "SANITY_VENV: no ansible-test in $venv/bin (make sanity-core221 builds .venv-core221)" >&2; exit 2; }
python_version=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "ansible-test $("$bin/python" -c 'from ansible.release import __version__; print(__version__)') on Python $python_version ($venv)"

# Seed ansible-test's pip bootstrap cache (its download host is unreachable here). Each
# ansible-test names the pip it bootstraps; the cache file carries that version.
pip_version=$(grep -oP "pip='\K[0-9.]+" "$("$bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py" | head -1)
[ -n "$pip_version" ] || { echo "cannot tell which pip this ansible-test bootstraps" >&2; exit 2; }
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
[ -s "$cache" ] || cp "$root/tests/sanity/get_pip_offline.py" "$cache"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/hotelbot/ops"
mkdir -p "$dest"
# The files git knows or would add, less those deleted in the work tree (not committed yet).
(cd "$root" && git ls-files -co --exclude-standard | grep -v -e '^\.collections/' -e '^\.venv' \
   | grep -vxF -f <(git ls-files -d) | tar -cf - -T - ) | tar -xf - -C "$dest"
cd "$dest"
# ansible-test lists files through git when it finds a repository.
git init -q && git add -A && git -c user.email=ci@localhost -c user.name=ci commit -qm sanity
"$bin/ansible-test" sanity --python "$python_version" --color no "$@"
