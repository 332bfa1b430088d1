"""What ships: the tarball `ansible-galaxy collection build` makes, its license and its changelog.

The tarball is built from a copy of the collection (the files git knows or would add, as
tests/sanity/run.sh copies them) with the clutter of a working checkout planted in it: a
venv per core, the sandbox's state, benchmark results, bytecode. build_ignore must keep every
one of them out, whatever a developer's checkout happens to hold.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CLUTTER = ('.venv/bin/python', '.venv-core221/bin/python', '.sandbox/state.json', 'benchmarks/results/run.json',
           'plugins/module_utils/__pycache__/common.cpython-311.pyc',
           'roles/preflight/__pycache__/x.pyc', 'tests/output/junit.xml', 'sandbox/__pycache__/x.pyc')


def _source_files():
    listed = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split('\0')
    return [path for path in listed if path and not path.startswith(('.collections/', '.venv'))
            and os.path.isfile(os.path.join(ROOT, path))]


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(source tree, tarball member names, MANIFEST.json) of a build of a cluttered copy."""
    base = tmp_path_factory.mktemp('packaging')
    tree = base / 'ansible_collections' / 'hotelbot' / 'ops'
    for path in _source_files():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, path), target)
    for path in CLUTTER:
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text('clutter\n')
    out = base / 'out'
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', str(tree), '--output-path', str(out)],
                   check=True, capture_output=True, cwd=str(base))
    tarballs = list(out.glob('hotelbot-ops-*.tar.gz'))
    assert len(tarballs) == 1
    with tarfile.open(tarballs[0]) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile('MANIFEST.json'))
    return tree, names, manifest


def _galaxy():
    with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
        return yaml.safe_load(handle)


def test_the_tarball_ships_license_changelog_runtime_playbooks_and_roles(built):
    tree, names, manifest = built
    for must in ('LICENSE', 'CHANGELOG.rst', 'changelogs/changelog.yaml', 'meta/runtime.yml', 'README.md'):
        assert must in names, must
    shipped = [os.path.relpath(os.path.join(top, name), tree) for part in ('playbooks', 'roles')
               for top, dirs, files in os.walk(tree / part) if '__pycache__' not in top for name in files
               if not name.endswith('.pyc')]
    assert len(shipped) > 20
    assert sorted(set(shipped) - set(names)) == []
    assert manifest['collection_info']['license'] == ['GPL-3.0-or-later']
    assert manifest['collection_info']['version'] == _galaxy()['version']


def test_the_tarball_holds_no_venv_sandbox_benchmarks_results_or_bytecode(built):
    names = built[1]
    dev_only = ('.sandbox', 'benchmarks', 'sandbox', 'tests', '.collections')
    leaked = [name for name in names
              if name.split('/')[0].startswith('.venv') or name.split('/')[0] in dev_only
              or '__pycache__' in name.split('/') or name.endswith('.pyc')]
    assert leaked == []


def test_license_is_the_gpl_3_text_galaxy_yml_names():
    galaxy = _galaxy()
    assert galaxy['license'] == ['GPL-3.0-or-later'] and 'license_file' not in galaxy
    with open(os.path.join(ROOT, 'LICENSE')) as handle:
        text = handle.read()
    assert text.lstrip().startswith('GNU GENERAL PUBLIC LICENSE\n                       Version 3, 29 June 2007')
    assert 'END OF TERMS AND CONDITIONS' in text and len(text.splitlines()) == 674


def test_the_changelog_has_the_release_galaxy_yml_builds():
    with open(os.path.join(ROOT, 'changelogs', 'changelog.yaml')) as handle:
        changelog = yaml.safe_load(handle)
    version = _galaxy()['version']
    assert version == '0.1.0' and version in changelog['releases']
    release = changelog['releases'][version]
    assert release['changes']['release_summary'] and len(release['changes']['minor_changes']) > 10
    assert {module['name'] for module in release['modules']} >= {'ecs_release', 'pg_backup', 'pg_restore', 'release_lock'}
    with open(os.path.join(ROOT, 'CHANGELOG.rst')) as handle:
        rst = handle.read()
    assert '\nv%s\n' % version in rst and 'hotelbot.ops.ecs_release - ' in rst


def test_a_fragment_added_after_the_release_lints_and_folds_into_it(tmp_path):
    """Others keep adding fragments after 0.1.0 was released; lint accepts them and `make changelog`
    (release --update-existing) puts them into the release galaxy.yml names."""
    tree = tmp_path / 'ansible_collections' / 'hotelbot' / 'ops'
    tree.mkdir(parents=True)
    shutil.copytree(os.path.join(ROOT, 'changelogs'), tree / 'changelogs',
                    ignore=shutil.ignore_patterns('fragments'))
    (tree / 'changelogs' / 'fragments').mkdir()
    shutil.copy2(os.path.join(ROOT, 'galaxy.yml'), tree / 'galaxy.yml')
    (tree / 'changelogs' / 'fragments' / 'later.yml').write_text(
        'bugfixes:\n  - rollback.yml - a change made after the release was cut.\n')
    lint = subprocess.run([os.path.join(BIN, 'antsibull-changelog'), 'lint'], cwd=tree, capture_output=True, text=True,
                          check=False)
    assert lint.returncode == 0 and lint.stdout == '', lint.stdout + lint.stderr
    release = subprocess.run([os.path.join(BIN, 'antsibull-changelog'), 'release', '--version', _galaxy()['version'],
                              '--update-existing'], cwd=tree, capture_output=True, text=True, check=False,
                             env=dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH']))
    assert release.returncode == 0, release.stdout + release.stderr
    with open(tree / 'changelogs' / 'changelog.yaml') as handle:
        changes = yaml.safe_load(handle)['releases'][_galaxy()['version']]['changes']
    assert 'rollback.yml - a change made after the release was cut.' in changes['bugfixes']
    assert not (tree / 'changelogs' / 'fragments' / 'later.yml').exists()
