"""Secrets never printed, against the real sandbox (issue 11, items 2-4): environment values in the
forms real deployments use (ecs_release_info, the hot-patch registration), a connection string given
as `database` to the PostgreSQL modules, and an empty `database`. Everything runs at -vvvv and the
whole output is searched; state is checked in moto and on disk."""
import json
import os
import subprocess
import uuid

from tests.integration.conftest import BIN, FAMILY, ROOT
from tests.integration.test_release_lock_live import ansible_env, parse


def run_module(name, args, verbosity='-vvvv'):
    """`ansible localhost -m hotelbot.ops.<name>`: (rc, result dict, everything printed)."""
    cmd = [os.path.join(BIN, 'ansible'), 'localhost', '-o', '-m', 'hotelbot.ops.' + name, '-a', json.dumps(args),
           verbosity]
    done = subprocess.run(cmd, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    output = done.stdout + done.stderr
    return done.returncode, parse(done.stdout, output), output


def token(label):
    return '%s-%s' % (label, uuid.uuid4().hex[:12])


def secret_environment():
    """(environment in real-world forms, the secret values in it)."""
    s = dict((k, token(k)) for k in ('redis', 'at', 'jdbc', 'ado', 'smtp', 'stripe', 'query', 'slack', 'dsn'))
    env = [
        dict(name='REDIS_URL', value='redis://:%s@cache.internal:6379/0' % s['redis']),
        dict(name='DATABASE_URL', value='postgres://bot:p@%s@db.internal/hotel' % s['at']),
        dict(name='JDBC_URL', value='jdbc:postgresql://db/hotel?user=bot&password=%s' % s['jdbc']),
        dict(name='ConnectionStrings__Default', value='Server=db;Database=hotel;User Id=bot;Password=%s;' % s['ado']),
        dict(name='SMTP_PWD', value=s['smtp']),
        dict(name='STRIPE_SK', value=s['stripe']),
        dict(name='CALLBACK_URL', value='https://partner.example/cb?token=%s&lang=en' % s['query']),
        dict(name='ALERTS', value='https://hooks.slack.com/services/T0/B0/%s' % s['slack']),
        dict(name='PG_CONNINFO', value="host=db password='%s' dbname=hotel" % s['dsn']),
        dict(name='LOG_LEVEL', value='info'),
    ]
    return env, list(s.values())


def register_with(sandbox, base_revision, env):
    """A new (not deployed) revision of the family: base_revision's definition with env added."""
    td = sandbox.ecs.describe_task_definition(taskDefinition='%s:%d' % (FAMILY, base_revision))['taskDefinition']
    container = dict(td['containerDefinitions'][0])
    container['environment'] = list(container.get('environment') or []) + env
    new = sandbox.ecs.register_task_definition(
        family=FAMILY, containerDefinitions=[container], networkMode=td['networkMode'], cpu=td['cpu'],
        memory=td['memory'], requiresCompatibilities=td['requiresCompatibilities'],
        executionRoleArn=td['executionRoleArn'], taskRoleArn=td['taskRoleArn'])['taskDefinition']
    return new['revision']


def test_environment_secrets_are_never_printed_by_info_or_hot_patch_at_vvvv(fresh, monkeypatch):
    env, secrets = secret_environment()
    revision = register_with(fresh, 3, env)
    monkeypatch.setenv('ANSIBLE_VERBOSITY', '4')
    try:
        info = fresh.adhoc('hotelbot.ops.ecs_release_info', 'cluster=%s service=%s environment_of=%d diff_from=current '
                           'diff_to=%d target=%d' % (fresh.cluster, fresh.service, revision, revision, revision))
        assert info.returncode == 0, info.stdout + info.stderr
        assert 'REDIS_URL' in info.stdout and 'LOG_LEVEL' in info.stdout   # the environment was shown
        image = fresh.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1'
        patch = fresh.adhoc('hotelbot.ops.ecs_release', 'cluster=%s service=%s revision=%d image=%s'
                            % (fresh.cluster, fresh.service, revision, image))
        assert patch.returncode == 0, patch.stdout + patch.stderr
        printed = info.stdout + info.stderr + patch.stdout + patch.stderr
        assert [s for s in secrets if s in printed] == []
        # the hot-patch registered a revision carrying the real values, and the service runs it
        running = fresh.ecs.describe_task_definition(taskDefinition=fresh.describe()['taskDefinition'])['taskDefinition']
        assert running['revision'] == revision + 1 and running['containerDefinitions'][0]['image'] == image
        values = dict((e['name'], e['value']) for e in running['containerDefinitions'][0]['environment'])
        assert all(values[e['name']] == e['value'] for e in env)
    finally:
        fresh.reset()


def db_args(sandbox, database, **extra):
    return dict(extra, database=database, connect_timeout=5)


def uri(sandbox, password, port=None):
    pg = sandbox.state['postgres']
    return 'postgresql://%s:%s@%s:%s/%s' % (pg['user'], password, pg['host'], port or pg['port'], pg['database'])


def test_a_uri_as_database_works_and_its_password_is_never_printed(sandbox, tmp_path):
    pg = sandbox.state['postgres']
    password = sandbox.secrets['postgres_password']
    rc, result, output = run_module('pg_check', db_args(sandbox, uri(sandbox, password), tables=['public.bot_messages']))
    assert rc == 0, output
    assert result['database'] == pg['database'] and result['tables']['public.bot_messages']['rows'] >= 1
    assert password not in output

    wrong = 'Wr0ng-' + uuid.uuid4().hex
    closed = 'Cl0sed-' + uuid.uuid4().hex
    dest = tmp_path / 'backups'
    dest.mkdir()
    runs = [
        run_module('pg_check', db_args(sandbox, uri(sandbox, wrong))),
        run_module('release_lock', db_args(sandbox, uri(sandbox, wrong), name='ecs/t/' + uuid.uuid4().hex[:8],
                                           owner='alice@ci/1')),
        run_module('pg_backup', db_args(sandbox, uri(sandbox, wrong), dest=str(dest))),
        run_module('pg_check', db_args(sandbox, uri(sandbox, closed, port=9))),
        run_module('pg_check', db_args(sandbox, "host=%s port=%s user=%s password='%s' dbname=%s" % (
            pg['host'], pg['port'], pg['user'], wrong, pg['database']))),
    ]
    for rc, result, output in runs:
        assert rc != 0
        assert "database '%s'" % pg['database'] in result['msg'], result['msg']
        assert wrong not in output and closed not in output and password not in output
    assert 'password authentication failed' in runs[0][1]['msg']
    assert list(dest.iterdir()) == []


def test_an_empty_database_backs_up_nothing(sandbox, tmp_path):
    pg = sandbox.state['postgres']
    dest = tmp_path / 'backups'
    dest.mkdir()
    rc, result, output = run_module('pg_backup', dict(
        host=pg['host'], port=pg['port'], user=pg['user'], password=sandbox.secrets['postgres_password'],
        database='', dest=str(dest)), verbosity='-v')
    assert rc != 0 and result['msg'] == 'database must not be empty', output
    assert result['changed'] is False
    assert list(dest.iterdir()) == []
