"""The shared PostgreSQL connection layer: settings for psycopg and for the client programs."""
import ast
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import postgres
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

PARAMS = dict(host='db.example', port=5433, user='bot', password='s3cret-pw', database='hotel_voice_bot',
              sslmode='verify-full', sslrootcert='/etc/ca.pem', passfile=None, connect_timeout=7,
              connect_params={'application_name': 'hotelbot.ops'})


def test_client_programs_get_settings_through_the_environment_and_keep_the_rest():
    env = postgres.libpq_env(PARAMS, base={'PATH': '/usr/bin', 'LANG': 'C.UTF-8', 'PGPASSWORD': 'old'})
    assert env['PATH'] == '/usr/bin' and env['LANG'] == 'C.UTF-8'
    assert env['PGHOST'] == 'db.example' and env['PGPORT'] == '5433' and env['PGUSER'] == 'bot'
    assert env['PGPASSWORD'] == 's3cret-pw' and env['PGDATABASE'] == 'hotel_voice_bot'
    assert env['PGSSLMODE'] == 'verify-full' and env['PGSSLROOTCERT'] == '/etc/ca.pem'
    assert env['PGCONNECT_TIMEOUT'] == '7' and env['PGAPPNAME'] == 'hotelbot.ops'
    assert 'PGPASSFILE' not in env


def test_database_override_for_scratch_databases():
    assert postgres.libpq_env(PARAMS, database='x__restore', base={})['PGDATABASE'] == 'x__restore'
    assert postgres.connection_settings(PARAMS, database='x__restore')['dbname'] == 'x__restore'


def test_connect_params_without_an_environment_variable_are_refused_not_dropped():
    params = dict(PARAMS, connect_params={'keepalives': 1, 'application_name': 'x'})
    with pytest.raises(OpsError, match='connect_params keepalives have no libpq environment variable'):
        postgres.libpq_env(params, base={})
    # psycopg takes them all as keywords
    assert postgres.connection_settings(params)['keepalives'] == '1'


@pytest.mark.parametrize('name, quoted', [
    ('hotel_voice_bot', '"hotel_voice_bot"'),
    ('hotel "bot"', '"hotel ""bot"""'),
    ('Mixed.Case', '"Mixed.Case"'),
])
def test_quote_ident(name, quoted):
    assert postgres.quote_ident(name) == quoted


def test_connect_failure_names_the_target_without_the_password():
    params = dict(PARAMS, host='127.0.0.1', port=9, connect_timeout=2, sslmode=None, sslrootcert=None)
    with pytest.raises(OpsError) as err:
        postgres.connect(params)
    assert "cannot connect to PostgreSQL database 'hotel_voice_bot' on 127.0.0.1:9 as bot" in err.value.msg
    assert 's3cret-pw' not in err.value.msg


def test_connection_options_put_the_callers_first(monkeypatch):
    """Ours come last (the later -c wins); the caller's come from connect_params, else PGOPTIONS,
    which an explicit `options` keyword on the connection would otherwise hide."""
    monkeypatch.setenv('PGOPTIONS', '-c search_path=ops')
    ours = {'max_parallel_maintenance_workers': '0'}
    assert postgres.connection_options({}, ours) == '-c search_path=ops -c max_parallel_maintenance_workers=0'
    given = {'connect_params': {'options': '-c work_mem=8MB'}}
    assert postgres.connection_options(given, ours) == '-c work_mem=8MB -c max_parallel_maintenance_workers=0'
    monkeypatch.delenv('PGOPTIONS')
    assert postgres.connection_options({}, {}) == ''


# ---------------------------------------------------------------- a connection string as database (issue 11, item 3)

URI = 'postgresql://bot:Uri%40pw-51@127.0.0.1:9/hotel_voice_bot?sslmode=disable&application_name=ops'
DSN = "host=127.0.0.1 port=9 user=bot password='Dsn pw-52' dbname=hotel_voice_bot"
BARE = dict(host=None, port=None, user=None, password=None, database=None, sslmode=None, sslrootcert=None,
            passfile=None, connect_timeout=10, connect_params={})


def test_a_uri_as_database_is_taken_apart():
    expanded = postgres.expand_database(dict(BARE, database=URI))
    assert expanded['database'] == 'hotel_voice_bot' and expanded['password'] == 'Uri@pw-51'
    assert (expanded['host'], expanded['port'], expanded['user'], expanded['sslmode']) == ('127.0.0.1', '9', 'bot', 'disable')
    assert expanded['connect_params'] == {'application_name': 'ops'}
    env = postgres.libpq_env(dict(BARE, database=URI), base={})
    assert env['PGDATABASE'] == 'hotel_voice_bot' and env['PGPASSWORD'] == 'Uri@pw-51' and env['PGAPPNAME'] == 'ops'
    assert postgres.connection_settings(dict(BARE, database=DSN))['password'] == 'Dsn pw-52'


def test_a_plain_database_name_is_left_alone():
    assert postgres.expand_database(PARAMS) is PARAMS


@pytest.mark.parametrize('overrides, names', [
    (dict(password='other-pw'), 'password disagrees'),
    (dict(host='db.example', user='alice'), 'host, user disagree'),
    (dict(connect_params={'application_name': 'x'}), 'connect_params.application_name disagrees'),
])
def test_an_option_that_disagrees_with_the_string_is_refused_without_values(overrides, names):
    with pytest.raises(OpsError, match=names) as err:
        postgres.expand_database(dict(BARE, database=URI, **overrides))
    assert 'Uri' not in err.value.msg and 'other-pw' not in err.value.msg and '127.0.0.1' not in err.value.msg


def test_an_option_that_agrees_or_is_at_its_default_is_fine():
    agreed = postgres.expand_database(dict(BARE, database=URI, user='bot', port=9, connect_timeout=10))
    assert agreed['user'] == 'bot' and agreed['password'] == 'Uri@pw-51'
    assert postgres.expand_database(dict(BARE, database=URI + '&connect_timeout=3'))['connect_timeout'] == '3'


@pytest.mark.parametrize('database, says', [
    ('postgresql://bot:Nodb-pw-53@db', 'names no database'),
    ("host=db password='Bad-pw-54 oops=", 'cannot parse it'),
])
def test_an_unusable_string_is_refused_without_repeating_it(database, says):
    with pytest.raises(OpsError, match=says) as err:
        postgres.expand_database(dict(BARE, database=database))
    assert 'pw-5' not in err.value.msg and 'bot' not in err.value.msg and 'oops' not in err.value.msg


def test_database_label_never_shows_a_password():
    assert postgres.database_label(dict(BARE, database=URI)) == (
        'postgresql://bot:********@127.0.0.1:9/hotel_voice_bot?sslmode=disable&application_name=ops')
    assert 'Dsn' not in postgres.database_label(dict(BARE, database=DSN))
    assert postgres.database_label(PARAMS) == 'hotel_voice_bot'


@pytest.mark.parametrize('database', ['', '   ', None])
def test_an_empty_database_is_never_left_to_libpq(database):
    """libpq falls back to the database named like the user: refused where the settings are made."""
    with pytest.raises(OpsError, match='database must not be empty'):
        postgres.connection_settings(dict(PARAMS, database=database))
    with pytest.raises(OpsError, match='database must not be empty'):
        postgres.libpq_env(dict(PARAMS, database=database), base={})
    with pytest.raises(OpsError, match='database must not be empty'):
        postgres.connection_settings(PARAMS, database='')


MODULE_ARGS = dict(
    pg_backup=dict(dest='/nonexistent/backups'),
    pg_check=dict(),
    release_lock=dict(name='ecs/c/s', owner='alice@ci/1'),
    pg_restore=dict(src='/nonexistent/x.dump', confirm=True),
)


@pytest.mark.parametrize('name', sorted(MODULE_ARGS))
@pytest.mark.parametrize('database, secrets', [(URI, ('Uri%40pw-51', 'Uri@pw-51')), (DSN, ('Dsn pw-52',))])
def test_no_module_message_or_output_holds_the_password(name, database, secrets, capsys):
    """Each PostgreSQL module, run for real against a closed port: what it prints (msg, invocation,
    everything) holds no password, and the message names the database by its name."""
    from tests.unit.test_empty_options import run_module
    result = run_module(name, dict(MODULE_ARGS[name], database=database, connect_timeout=2), capsys)
    printed = json.dumps(result)
    assert result['failed'] is True
    assert [s for s in secrets if s in printed] == []
    assert database not in printed
    if name != 'pg_restore':   # pg_restore refuses the missing file before connecting
        assert "database 'hotel_voice_bot' on 127.0.0.1:9 as bot" in result['msg'], result['msg']


def test_a_short_password_in_the_string_is_registered_too(capsys):
    from tests.unit.test_empty_options import run_module
    result = run_module('pg_check', dict(database='postgresql://bot:pw@127.0.0.1:9/hotel', connect_timeout=2), capsys)
    assert result['invocation']['module_args']['password'] != 'pw'
    assert result['invocation']['module_args']['database'] == 'hotel'


def test_secrets_in_options_are_hidden_even_when_the_spec_refuses_the_task():
    """common.execute registers a PostgreSQL work's hide_secrets before its own checks: a refusal's
    invocation must not show the password of a connection string (a short one too)."""
    from ansible_collections.hotelbot.ops.plugins.module_utils.common import Task, execute
    from ansible_collections.hotelbot.ops.plugins.modules.release_lock import SPEC
    from ansible_collections.hotelbot.ops.plugins.module_utils.release_lock import release_lock_task
    hidden = set()
    params = dict(BARE, database='postgresql://bot:pw@db/hotel', name='n', owner='o', table='', schema='public',
                  connect_params={'sslpassword': 'k'})
    failed = execute(SPEC, release_lock_task, Task(params, hide=hidden.add))
    assert failed['msg'] == 'table must not be empty'
    assert {'postgresql://bot:pw@db/hotel', 'pw', 'k'} <= hidden


# ---------------------------------------------------------------- client programs: the one place they start

def _gone(pid, within=5.0):
    """True once pid has exited (no such process, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open('/proc/%d/stat' % pid) as stat:
                if stat.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X'):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _forking_program(tmp_path):
    """A program that starts a worker (as pg_dump --jobs does), writes the worker's pid, and waits."""
    pid_file = tmp_path / 'worker.pid'
    return ['sh', '-c', 'sleep 60 & echo $! > %s; wait' % pid_file], pid_file


def _read_pid(pid_file):
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, 'the program never wrote its worker pid'
        time.sleep(0.02)
    return int(pid_file.read_text())


def test_stop_program_ends_the_workers_a_program_forked(tmp_path):
    argv, pid_file = _forking_program(tmp_path)
    process = postgres.start_program(argv, env=None)
    worker = _read_pid(pid_file)
    postgres.stop_program(process)
    assert process.returncode == -signal.SIGKILL
    assert _gone(worker), 'the worker outlived stop_program'


def test_a_program_past_its_timeout_is_stopped_with_its_workers(tmp_path):
    argv, pid_file = _forking_program(tmp_path)
    started = time.monotonic()
    with pytest.raises(OpsError) as raised:
        postgres.run_program(argv, None, 'pg_dump', timeout=1)
    assert raised.value.msg == 'pg_dump did not finish within 1 s; it was stopped'
    assert time.monotonic() - started < 10
    assert _gone(_read_pid(pid_file)), 'the worker outlived the timeout'


def test_an_interrupted_wait_stops_the_program(tmp_path, monkeypatch):
    argv, pid_file = _forking_program(tmp_path)
    started = []
    real_start = postgres.start_program

    def interrupted(timeout=None):
        raise KeyboardInterrupt()

    def start(*args, **kwargs):
        started.append(real_start(*args, **kwargs))
        _read_pid(pid_file)
        monkeypatch.setattr(started[0], 'communicate', interrupted)
        return started[0]
    monkeypatch.setattr(postgres, 'start_program', start)
    with pytest.raises(KeyboardInterrupt):
        postgres.run_program(argv, None, 'pg_restore')
    assert started[0].returncode == -signal.SIGKILL
    assert _gone(_read_pid(pid_file))


def test_run_program_streams_stdout_to_a_file_and_keeps_only_the_stderr_tail(tmp_path):
    out = tmp_path / 'out'
    script = 'import sys; sys.stdout.write("x" * 300000); sys.stderr.write("e" * 100000 + "\\nlast line\\n"); sys.exit(3)'
    with open(out, 'wb') as sink:
        returncode, captured, errors = postgres.run_program([sys.executable, '-c', script], None, 'pg_dump', stdout=sink)
    assert returncode == 3 and captured is None
    assert out.stat().st_size == 300000
    assert len(errors) == postgres.STDERR_TAIL_BYTES and errors.endswith(b'e\nlast line\n')


def test_client_programs_get_no_shell_no_stdin_and_their_own_process_group():
    with pytest.raises(TypeError):
        postgres.start_program('pg_dump --help; rm -rf /', env=None)
    script = 'import os, sys; print(os.getpgid(0) == os.getpid(), sys.stdin.read() == "")'
    returncode, out, errors = postgres.run_program([sys.executable, '-c', script], None, 'probe')
    assert errors == b''
    assert returncode == 0 and out.split() == [b'True', b'True']


def test_run_client_returns_text_and_names_the_step_when_the_program_fails():
    assert postgres.run_client({}, 'db', ['sh', '-c', 'printf "a\\r\\nb\\n"'], 'list') == 'a\nb\n'
    with pytest.raises(OpsError) as raised:
        postgres.run_client({}, 'db', ['sh', '-c', 'echo one >&2; echo two >&2; exit 4'], 'verify: read the TOC')
    assert raised.value.msg == 'verify: read the TOC failed (exit 4): one | two'
    with pytest.raises(OpsError) as raised:
        postgres.run_client({}, 'db', ['/nonexistent/pg_restore'], 'restore')
    assert raised.value.msg.startswith('restore: cannot run /nonexistent/pg_restore: ')


def test_the_shared_start_makes_programs_die_with_the_module(tmp_path):
    """A module killed outright (SIGKILL: no handler runs) takes its client programs with it."""
    pid_file = tmp_path / 'pid'
    module = subprocess.Popen([sys.executable, '-c', (
        'import sys, time\n'
        'sys.path[:0] = %r\n'
        'from ansible_collections.hotelbot.ops.plugins.module_utils import postgres\n'
        'child = postgres.start_program(["sleep", "60"], None)\n'
        'open(%r, "w").write(str(child.pid))\n'
        'time.sleep(60)\n') % (sys.path, str(pid_file))])
    child = _read_pid(pid_file)
    module.kill()
    module.wait()
    assert _gone(child), 'the client program outlived the module'


def test_module_utils_start_programs_only_through_postgres_start_program():
    """ansible-test (2.21+) flags subprocess in module_utils; the one start, with its reason, is postgres.py's."""
    utils = os.path.join(os.path.dirname(postgres.__file__))
    starters = {}
    for name in sorted(os.listdir(utils)):
        if name.endswith('.py'):
            with open(os.path.join(utils, name)) as source:
                tree = ast.parse(source.read())
            calls = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                     and isinstance(node.value, ast.Name) and node.value.id in ('subprocess', 'os')
                     and node.attr in ('Popen', 'run', 'call', 'check_call', 'check_output', 'system', 'popen',
                                       'posix_spawn', 'posix_spawnp', 'spawnv', 'spawnve', 'execv', 'execve')]
            if calls:
                starters[name] = len(calls)
    assert starters == {'postgres.py': 1}
