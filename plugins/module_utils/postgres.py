# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection settings shared by pg_backup, pg_restore and pg_check.

One set of libpq settings feeds both psycopg (queries) and the client programs
(pg_dump, pg_restore, psql). The programs get them through the environment (PG*
variables) added to the caller's environment, never dropping it, and never on the
command line: a password in argv is visible to every user through ps.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess

from ansible.module_utils.basic import env_fallback

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, hide

try:
    import psycopg
    from psycopg import sql
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the host
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = import_error

# Option name -> libpq environment variable.
LIBPQ_ENV = dict(
    host='PGHOST',
    port='PGPORT',
    user='PGUSER',
    password='PGPASSWORD',
    database='PGDATABASE',
    sslmode='PGSSLMODE',
    sslrootcert='PGSSLROOTCERT',
    passfile='PGPASSFILE',
    connect_timeout='PGCONNECT_TIMEOUT',
)
# connect_params keys that libpq also reads from the environment.
EXTRA_ENV = dict(
    application_name='PGAPPNAME',
    options='PGOPTIONS',
    sslcert='PGSSLCERT',
    sslkey='PGSSLKEY',
    sslcrl='PGSSLCRL',
    target_session_attrs='PGTARGETSESSIONATTRS',
    gssencmode='PGGSSENCMODE',
    channel_binding='PGCHANNELBINDING',
    service='PGSERVICE',
)


def postgres_argument_spec():
    """Connection options every PostgreSQL module takes (doc fragment hotelbot.ops.postgres)."""
    return dict(
        host=dict(type='str', aliases=['login_host'], fallback=(env_fallback, ['PGHOST'])),
        port=dict(type='int', aliases=['login_port'], fallback=(env_fallback, ['PGPORT'])),
        user=dict(type='str', aliases=['login_user'], fallback=(env_fallback, ['PGUSER'])),
        password=dict(type='str', aliases=['login_password'], no_log=True,
                      fallback=(env_fallback, ['PGPASSWORD'])),
        database=dict(type='str', aliases=['db', 'login_db'], required=True),
        sslmode=dict(type='str', choices=['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']),
        sslrootcert=dict(type='path'),
        passfile=dict(type='path'),
        connect_timeout=dict(type='int', default=10),
        connect_params=dict(type='dict', default={}),
    )


def connection_settings(params, database=None):
    """{libpq keyword: value} from module params; database overrides params['database']."""
    settings = {}
    for option in LIBPQ_ENV:
        value = database if option == 'database' and database is not None else params.get(option)
        if value is not None and value != '':
            settings['dbname' if option == 'database' else option] = str(value)
    for key, value in (params.get('connect_params') or {}).items():
        if value is not None:
            settings[str(key)] = str(value)
    return settings


def libpq_env(params, database=None, base=None):
    """The caller's environment plus PG* variables for the client programs.

    connect_params without an environment variable cannot be passed this way; the
    caller gets OpsError naming them rather than having them silently dropped.
    """
    env = dict(os.environ if base is None else base)
    for option, variable in LIBPQ_ENV.items():
        value = database if option == 'database' and database is not None else params.get(option)
        if value is not None and value != '':
            env[variable] = str(value)
    unknown = []
    for key, value in (params.get('connect_params') or {}).items():
        if value is None:
            continue
        if key in EXTRA_ENV:
            env[EXTRA_ENV[key]] = str(value)
        else:
            unknown.append(key)
    if unknown:
        raise OpsError('connect_params %s have no libpq environment variable and cannot be passed to the '
                       'PostgreSQL client programs; supported: %s'
                       % (', '.join(sorted(unknown)), ', '.join(sorted(EXTRA_ENV))))
    return env


def options_text(session_options, given=''):
    """libpq `options` (PGOPTIONS) text: `given` followed by `-c name=value` per session setting."""
    extra = ['-c %s=%s' % (name, value) for name, value in sorted((session_options or {}).items())]
    return ' '.join([given] + extra).strip()


def connection_options(params, session_options):
    """libpq `options` for a connection of ours: the caller's own (connect_params.options, else
    PGOPTIONS, which an explicit `options` keyword would otherwise hide) followed by ours."""
    given = (params.get('connect_params') or {}).get('options') or os.environ.get('PGOPTIONS', '')
    return options_text(session_options, given)


def session_env(env, session_options):
    """env with session settings (GUC name -> value) added to PGOPTIONS."""
    if session_options:
        env['PGOPTIONS'] = options_text(session_options, env.get('PGOPTIONS', ''))
    return env


def program(bin_dir, name):
    return os.path.join(bin_dir, name) if bin_dir else name


def error_tail(text, lines=5):
    """The last lines of a client program's error output, on one line."""
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    return ' | '.join(text.strip().splitlines()[-lines:])


def run_client(params, database, argv, step, session_options=None):
    """Run a client program with libpq settings in its environment; stdout, or OpsError.

    session_options (GUC name -> value) are added to PGOPTIONS for that program's session.
    """
    env = session_env(libpq_env(params, database=database), session_options)
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    except OSError as err:
        raise OpsError('%s: cannot run %s: %s' % (step, argv[0], err))
    if done.returncode != 0:
        tail = error_tail(done.stderr)
        raise OpsError('%s failed (exit %s): %s' % (step, done.returncode, tail or 'no error output'))
    return done.stdout


def prepare_module(module):
    """What every PostgreSQL module does first: psycopg present, libpq secrets kept out of output."""
    require_psycopg(module)
    # a password passed as a libpq parameter is as secret as the password option
    extra = module.params.get('connect_params') or {}
    hide(module, extra.get('password'), extra.get('sslpassword'))


def require_psycopg(module):
    if not HAS_PSYCOPG:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib('psycopg (version 3)'), exception=str(PSYCOPG_IMPORT_ERROR))


def first_line(err):
    """The first line of an error's text (psycopg's carry DETAIL/CONTEXT lines after it)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def connect(params, database=None, autocommit=True, **settings_override):
    """A psycopg 3 connection, or OpsError with libpq's own reason (never the password).
    settings_override: more libpq keywords (options, client_encoding) over the params'."""
    settings = connection_settings(params, database)
    settings.update(settings_override)
    try:
        return psycopg.connect(autocommit=autocommit, **settings)
    except psycopg.Error as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        password = params.get('password')
        if password:
            reason = reason.replace(password, '********')
        raise OpsError('cannot connect to PostgreSQL database %r on %s:%s as %s: %s' % (
            settings.get('dbname'), settings.get('host', 'local socket'), settings.get('port', 5432),
            settings.get('user', 'the OS user'), reason))


def quote_ident(name):
    """A quoted SQL identifier for text that goes to psql/pg_restore (psycopg uses sql.Identifier)."""
    return '"%s"' % str(name).replace('"', '""')


def identifier(*names):
    """psycopg's composable for a (possibly schema-qualified) identifier."""
    return sql.Identifier(*names)
