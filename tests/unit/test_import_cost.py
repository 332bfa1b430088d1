"""What the ansible-playbook process imports for a Fly run: the action plugins of the tasks on the Fly path
(release_lock with backend=fly, fly_release_info, fly_release, http_check) are imported there, on the critical
path of every run, before the first worker forks. psycopg and botocore cost about 0.3 s in that process and
a Fly run needs neither; they must come only with the backend (or the platform) that uses them."""
import json
import os
import subprocess
import sys

import pytest

from tests.unit.module_runner import COLLECTIONS

FLY_PATH = ('release_lock', 'fly_release_info', 'fly_release', 'http_check')
PROBE = '''
import json, sys
for name in sys.argv[1:]:
    __import__('ansible_collections.hotelbot.ops.plugins.action.' + name)
print(json.dumps(sorted(m for m in ('psycopg', 'botocore') if m in sys.modules)))
'''


def imported_by(*plugins):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    out = subprocess.run([sys.executable, '-c', PROBE] + list(plugins), env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def test_the_fly_path_imports_neither_psycopg_nor_botocore():
    assert imported_by(*FLY_PATH) == []


@pytest.mark.parametrize('plugin, library', [('ecs_release', 'botocore'), ('pg_check', 'psycopg')])
def test_the_platforms_that_use_them_still_do(plugin, library):
    # The probe itself can tell: the ECS and PostgreSQL action plugins need their library.
    assert library in imported_by(plugin)
