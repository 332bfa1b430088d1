"""The execution environment: what ansible-builder finds in the built collection, and the build
context it writes from examples/awx/execution-environment.yml (no container engine needed).

The collection is built and installed the way a user gets it (ansible-galaxy), so a file left out
of the tarball fails here, not in someone's image build."""
import glob
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from bindep.depends import Depends

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CLIENT_PROGRAMS = ('pg_dump', 'pg_restore', 'psql')


def run(*cmd, **kwargs):
    completed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert completed.returncode == 0, '%s failed:\n%s\n%s' % (cmd, completed.stdout, completed.stderr)
    return completed


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The collection as ansible-galaxy installs it from its tarball: a collections path."""
    work = tmp_path_factory.mktemp('ee')
    config = work / 'ansible.cfg'
    config.write_text('[defaults]\n')
    env = dict(os.environ, ANSIBLE_CONFIG=str(config))
    run(os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', ROOT, '--output-path', str(work), '--force', env=env)
    tarball, = glob.glob(str(work / 'hotelbot-ops-*.tar.gz'))
    run(os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', tarball, '-p', str(work / 'collections'), env=env)
    return work / 'collections'


def names(lines):
    """Requirement names, without versions, selectors or introspect's '# from collection' notes."""
    return {line.split('#')[0].split('[')[0].split('>')[0].split('=')[0].split('<')[0].strip().lower() for line in lines}


def test_introspect_finds_the_collections_python_and_system_requirements(installed, tmp_path):
    pip_file, bindep_file = tmp_path / 'requirements.txt', tmp_path / 'bindep.txt'
    run(os.path.join(BIN, 'ansible-builder'), 'introspect', str(installed),
        '--write-pip', str(pip_file), '--write-bindep', str(bindep_file))
    pip_lines = pip_file.read_text().splitlines()
    bindep_lines = bindep_file.read_text().splitlines()
    assert {'botocore', 'psycopg'} <= names(pip_lines)
    assert all('from collection hotelbot.ops' in line for line in pip_lines + bindep_lines)
    # What the image's package manager installs, per platform, from what introspect found.
    rules = Depends(''.join(line.split('#')[0].rstrip() + '\n' for line in bindep_lines))
    assert [r[0] for r in rules.active_rules(['platform:dpkg', 'platform:debian', 'default'])] == ['postgresql-client']
    assert [r[0] for r in rules.active_rules(['platform:rpm', 'platform:redhat', 'platform:centos', 'default'])] \
        == ['postgresql']


def test_bindep_names_the_package_that_ships_the_client_programs_here():
    """On this Debian machine: the package bindep.txt names is the one pg_dump & co. come from."""
    if shutil.which('dpkg') is None:
        pytest.skip('not a Debian system')
    rules = Depends(open(os.path.join(ROOT, 'bindep.txt'), encoding='utf-8').read())
    wanted = [r[0] for r in rules.active_rules(rules.platform_profiles() + ['default'])]
    assert wanted == ['postgresql-client']
    versioned = run('apt-cache', 'depends', '--important', wanted[0]).stdout  # postgresql-client-NN
    providers = {line.split(':', 1)[1].strip() for line in versioned.splitlines() if 'Depends:' in line}
    for program in CLIENT_PROGRAMS:
        paths = glob.glob('/usr/lib/postgresql/*/bin/' + program)
        assert paths, program
        owner = run('dpkg', '-S', paths[0]).stdout.split(':', 1)[0]
        assert owner in providers, (program, owner, providers)


def test_create_writes_a_build_context_with_the_client_programs_and_psycopg(tmp_path):
    definition = os.path.join(ROOT, 'examples', 'awx', 'execution-environment.yml')
    with open(definition, encoding='utf-8') as handle:
        assert yaml.safe_load(handle)['version'] == 3
    context = tmp_path / 'context'
    run(os.path.join(BIN, 'ansible-builder'), 'create', '-f', definition, '-c', str(context))
    containerfile, = [p for p in (context / 'Containerfile', context / 'Dockerfile') if p.exists()]
    text = containerfile.read_text()
    assert 'COPY _build/requirements.txt requirements.txt' in text
    assert 'COPY _build/bindep.txt bindep.txt' in text
    assert '--user-pip=requirements.txt --user-bindep=bindep.txt' in text
    assert 'ansible-core>=2.19' in text and 'ansible-runner' in text
    assert {'botocore', 'psycopg'} <= names((context / '_build' / 'requirements.txt').read_text().splitlines())
    copied = Depends((context / '_build' / 'bindep.txt').read_text())
    assert [r[0] for r in copied.active_rules(['platform:rpm', 'platform:centos', 'default'])] == ['postgresql']
    assert [r[0] for r in copied.active_rules(['platform:dpkg', 'default'])] == ['postgresql-client']
