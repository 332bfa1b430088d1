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

import contextlib
import ctypes
import locale
import os
import re
import signal
import subprocess
import tempfile
import threading

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, first_line
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import mask_text, secret_parts
from ansible_collections.hotelbot.ops.plugins.module_utils.option_specs import postgres_argument_spec

# The one import of the driver: the other PostgreSQL module_utils take psycopg and sql from here,
# and prepare() refuses to work without it (the message names the missing library).
try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
    DATABASE_ERRORS = (psycopg.Error,)
except ImportError as import_error:  # pragma: no cover - depends on the host
    psycopg = sql = conninfo_to_dict = None
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = import_error
    DATABASE_ERRORS = ()

PR_SET_PDEATHSIG = 1  # linux/prctl.h

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


# libpq takes a dbname that starts with a URI prefix or holds "=" as a whole connection string
# (its expand_dbname rule); so does expand_database, so that both read the same thing.
CONNINFO_URI = re.compile(r'^postgres(?:ql)?://', re.I)


def is_conninfo(value):
    """True when a database value is a connection string (URI or key=value DSN), by libpq's rule."""
    return isinstance(value, str) and bool(CONNINFO_URI.match(value.strip()) or '=' in value)


def expand_database(params):
    """params with a connection string given as database (DATABASE_URL, a key=value DSN) taken apart:
    database becomes the dbname, host/port/user/password/ssl* the options, the rest connect_params.

    A setting given both in the string and as an option must agree (an option left at its default
    does not count as given); otherwise OpsError naming the settings, never their values. The string
    itself is never put in a message: it may hold a password.
    """
    value = params.get('database')
    if not is_conninfo(value):
        return params
    try:
        parts = conninfo_to_dict(value.strip())
    except psycopg.Error:
        raise OpsError('database looks like a connection string (a postgresql:// URI or key=value pairs) but libpq '
                       'cannot parse it; it is not repeated here because it may hold a password')
    dbname = parts.pop('dbname', None)
    if not dbname or not dbname.strip():
        raise OpsError('database is a connection string that names no database (the URI path or dbname=): libpq '
                       'would fall back to the user name; add the database name to it')
    defaults = dict((name, spec.get('default')) for name, spec in postgres_argument_spec().items())
    expanded = dict(params, database=dbname, connect_params=dict(params.get('connect_params') or {}))
    disagree = []
    for key, setting in parts.items():
        if key in LIBPQ_ENV:
            given = params.get(key)
            if given is None or given == '' or given == defaults.get(key):
                expanded[key] = setting
            elif str(given) != setting:
                disagree.append(key)
        else:
            given = expanded['connect_params'].get(key)
            if given is None:
                expanded['connect_params'][key] = setting
            elif str(given) != setting:
                disagree.append('connect_params.%s' % key)
    if disagree:
        raise OpsError('database is a connection string whose %s disagree%s with the option%s of that name: give '
                       'each setting in one place' % (', '.join(sorted(disagree)), 's' if len(disagree) == 1 else '',
                                                      '' if len(disagree) == 1 else 's'))
    return expanded


def require_database(params, database=None):
    """OpsError when the database to connect to is empty: libpq would silently use the database
    named like the user (an unset inventory variable would back up `postgres`)."""
    name = database if database is not None else params.get('database')
    if name is None or not str(name).strip():
        raise OpsError('database must not be empty: libpq would fall back to the database named like the user')


def database_label(params, database=None):
    """The database to name in a message: never a password, even if params were not expanded."""
    return mask_text(str(database if database is not None else params.get('database')))


def connection_settings(params, database=None):
    """{libpq keyword: value} from module params; database overrides params['database']."""
    params = expand_database(params)
    require_database(params, database)
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
    params = expand_database(params)
    require_database(params, database)
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


# A PostgreSQL memory setting: an integer with an optional unit (no unit = kB).
SIZE = re.compile(r'^[0-9]{1,12}\s*(B|kB|MB|GB|TB)?$')


def validate_size(value, option):
    """value as a PostgreSQL memory size (64MB, 1GB, 65536 = kB), or OpsError naming option: it goes
    into PGOPTIONS, which libpq splits at spaces, so anything else could carry other settings."""
    text = str(value).strip()
    if not SIZE.match(text):
        raise OpsError('%s must be a PostgreSQL size such as 64MB, 1GB or a number of kB, got %r'
                       % (option, str(value)[:40]))
    return text.replace(' ', '')


def free_connections(cursor):
    """(connections a role without superuser can still open, how that was worked out)."""
    cursor.execute("SELECT current_setting('max_connections')::int, "
                   "current_setting('superuser_reserved_connections')::int, "
                   "coalesce(current_setting('reserved_connections', true), '0')::int, "
                   "(SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend')")
    most, superuser, reserved, used = cursor.fetchone()
    return max(0, most - superuser - reserved - used), dict(
        max_connections=most, reserved_connections=superuser + reserved, in_use=used)


def cap_jobs(option, jobs, free, facts, extra=1):
    """(jobs, warning or None): jobs capped so jobs + extra connections fit in the free ones."""
    most = max(1, free - extra)
    if jobs <= most:
        return jobs, None
    return most, ('%s %d capped at %d: the server has %d free connections (max_connections %d, %d reserved, %d in use)'
                  % (option, jobs, most, free, facts['max_connections'], facts['reserved_connections'],
                     facts['in_use']))


def preexec_die_with_parent():
    """A preexec_fn that makes a client program die with the process that started it (Linux's
    parent-death signal): a killed module must not leave pg_dump holding its connection and snapshot.
    None where prctl is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return die_with_parent


# Client programs (pg_dump, pg_restore, psql) start here and nowhere else in the collection.
# ansible-test's pylint (ansible-core 2.21+) asks module_utils to use AnsibleModule.run_command.
# It cannot run these: it pipes stdout and stderr and holds both in memory until the program
# exits (a dump, or the COPY stream pg_load consumes while pg_restore writes it, is gigabytes),
# has no timeout, takes no parent-death signal or process group, leaves the program running
# when the caller is interrupted, and needs the AnsibleModule our module_utils never see.
# What it would give is kept: argv lists only (never a shell), stdin closed, descriptors closed.
CAPTURE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDERR_TAIL_BYTES = 16384


def start_program(argv, env, stdout=DEVNULL, stderr=DEVNULL, bufsize=-1):
    """Start a client program (argv list, stdin closed) in its own process group, so that
    stop_program also ends the workers it forks (--jobs); with a parent-death signal where only
    one thread runs (a preexec_fn is not safe beside threads). OSError if it cannot start."""
    if isinstance(argv, (str, bytes)):
        raise TypeError('start_program takes an argv list, not a command line')
    preexec = preexec_die_with_parent() if threading.active_count() == 1 else None
    # The collection's one process start (why not run_command: the comment above).
    return subprocess.Popen(  # pylint: disable=ansible-bad-function
        list(argv), env=env, stdin=DEVNULL, stdout=stdout, stderr=stderr, bufsize=bufsize,
        close_fds=True, start_new_session=True, preexec_fn=preexec)


def stop_program(process):
    """Kill a client program and its process group, and reap it."""
    if process.returncode is None:  # not reaped yet: its pid still names its group
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            process.kill()  # no group of its own: the program itself
    process.wait()


@contextlib.contextmanager
def stopped_on_failure(process, step, timeout=None):
    """Around a wait for process: on its timeout an OpsError naming the step, on any exception
    (an error here, Ctrl-C, the module being stopped) the program's group is killed first."""
    try:
        yield
    except subprocess.TimeoutExpired:
        stop_program(process)
        raise OpsError('%s did not finish within %s s; it was stopped' % (step, timeout), step=step)
    except BaseException:
        stop_program(process)
        raise


def run_program(argv, env, step, stdout=CAPTURE, timeout=None):
    """Run a client program to its end: (exit status, stdout bytes when captured else None, the
    last STDERR_TAIL_BYTES of stderr). stderr goes to a temporary file, never whole into memory;
    stdout may be a file to stream into. OSError if it cannot start."""
    with tempfile.TemporaryFile() as errors:
        process = start_program(argv, env, stdout=stdout, stderr=errors)
        with stopped_on_failure(process, step, timeout):
            out = process.communicate(timeout=timeout)[0]
        errors.seek(max(0, os.fstat(errors.fileno()).st_size - STDERR_TAIL_BYTES))
        return process.returncode, out, errors.read()


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
        returncode, out, errors = run_program(argv, env, step)
    except OSError as err:
        raise OpsError('%s: cannot run %s: %s' % (step, argv[0], err))
    if returncode != 0:
        tail = error_tail(errors)
        raise OpsError('%s failed (exit %s): %s' % (step, returncode, tail or 'no error output'))
    # As subprocess's text mode reads it: the locale's encoding, universal newlines.
    return out.decode(locale.getpreferredencoding(False)).replace('\r\n', '\n').replace('\r', '\n')


def hide_secrets(task):
    """Keep libpq secrets given outside the password option out of all output: a connection string
    given as database (and the password inside it), connect_params' passwords. A password is as secret
    as the password option: hidden whatever its length, as Ansible does for no_log options."""
    params = task.params
    database = params.get('database')
    if is_conninfo(database):
        task.hide(database, *secret_parts('database', database))
        try:
            task.hide(conninfo_to_dict(database.strip()).get('password') if HAS_PSYCOPG else None, any_length=True)
        except DATABASE_ERRORS:
            pass  # unparsable: expand_database refuses it, without repeating it
    extra = params.get('connect_params') or {}
    if isinstance(extra, dict):
        task.hide(extra.get('password'), extra.get('sslpassword'), any_length=True)


def prepare(task):
    """What every PostgreSQL module's work does first: psycopg present, secrets hidden, a connection
    string given as database taken apart (expand_database) in task.params."""
    require_psycopg()
    hide_secrets(task)
    task.params.update(expand_database(task.params))
    return task.params


def postgres_work(operation):
    """A module's work function from operation(task): prepare() first, and the 'warnings' of its
    result (or of its OpsError) said as the task's warnings."""
    def work(task):
        prepare(task)
        try:
            result = operation(task)
        except OpsError as err:
            _say(task, err.result.pop('warnings', None))
            raise
        _say(task, result.pop('warnings', None))
        return result
    work.hide_secrets = hide_secrets  # before the spec's checks too (common.execute)
    return work


def _say(task, warnings):
    for warning in warnings or []:
        task.warn(warning)


def require_psycopg():
    """OpsError naming the missing library when psycopg 3 cannot be imported here."""
    if not HAS_PSYCOPG:
        from ansible.module_utils.basic import missing_required_lib
        raise OpsError(missing_required_lib('psycopg (version 3)'), exception=str(PSYCOPG_IMPORT_ERROR))


def connect(params, database=None, autocommit=True, **settings_override):
    """A psycopg 3 connection, or OpsError with libpq's own reason (never the password).
    settings_override: more libpq keywords (options, client_encoding) over the params'."""
    params = expand_database(params)
    settings = connection_settings(params, database)
    settings.update(settings_override)
    try:
        return psycopg.connect(autocommit=autocommit, **settings)
    except psycopg.Error as err:
        reason = first_line(err)
        password = params.get('password')
        if password:
            reason = reason.replace(password, '********')
        raise OpsError('cannot connect to PostgreSQL database %r on %s:%s as %s: %s' % (
            mask_text(settings.get('dbname')), settings.get('host', 'local socket'), settings.get('port', 5432),
            settings.get('user', 'the OS user'), reason))


def quote_ident(name):
    """A quoted SQL identifier for text that goes to psql/pg_restore (psycopg uses sql.Identifier)."""
    return '"%s"' % str(name).replace('"', '""')


def identifier(*names):
    """psycopg's composable for a (possibly schema-qualified) identifier."""
    return sql.Identifier(*names)


# --------------------------------------------------------------------------- table names

# What PostgreSQL reads as one unquoted identifier: a letter or _, then letters, digits, _ and $.
UNQUOTED_IDENTIFIER = re.compile(r'^[^\W\d][\w$]*$')


def parse_table_name(name):
    """(schema or None, table) from a name written the way SQL writes it.

    Splits on the first dot outside double quotes. A part in double quotes is taken
    literally ("" inside it is one "); a part without quotes is folded to lower case,
    as PostgreSQL does. Raises ValueError for names that are not one or two identifiers.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError('empty table name')
    parts = []
    current = []
    quoted_part = False
    i = 0
    text = name.strip()
    in_quotes = False
    while i < len(text):
        char = text[i]
        if in_quotes:
            if char == '"':
                if i + 1 < len(text) and text[i + 1] == '"':
                    current.append('"')
                    i += 2
                    continue
                in_quotes = False
            else:
                current.append(char)
        elif char == '"':
            if current:
                raise ValueError('a quote inside an unquoted identifier in %r' % name)
            in_quotes = True
            quoted_part = True
        elif char == '.':
            parts.append(_finish_part(current, quoted_part, name))
            current = []
            quoted_part = False
        else:
            if quoted_part:
                raise ValueError('text after a closing quote in %r (a dot must separate schema and table)' % name)
            current.append(char)
        i += 1
    if in_quotes:
        raise ValueError('unterminated quote in %r' % name)
    parts.append(_finish_part(current, quoted_part, name))
    if len(parts) > 2:
        raise ValueError('%r has more than one unquoted dot; write it as schema.table and quote a name '
                         'that contains a dot ("my.table")' % name)
    if len(parts) == 1:
        return None, parts[0]
    return parts[0], parts[1]


def _finish_part(chars, quoted, name):
    part = ''.join(chars)
    if quoted:
        if part == '':
            raise ValueError('empty quoted identifier in %r' % name)
        return part
    part = part.strip()
    if not part:
        raise ValueError('empty identifier in %r' % name)
    if any(c.isspace() for c in part):
        raise ValueError('%r contains spaces outside quotes; quote the identifier ("%s")' % (name, part))
    if not UNQUOTED_IDENTIFIER.match(part):
        bad = ''.join(sorted(set(c for c in part if not (c.isalnum() or c in '_$'))))
        raise ValueError('%r is not an unquoted SQL name (%s); unquoted names are letters, digits, _ and $, '
                         'not starting with a digit; quote a name that really has other characters ("%s")'
                         % (name, repr(bad) if bad else 'it starts with a digit', part.replace('"', '""')))
    return part.lower()


def check_table_names(option, names, outcome):
    """OpsError naming the option and the entry for the first name that is not schema.table SQL syntax.

    Checked before connecting, so a typo (or a `;`) is named as input, not as a server error.
    """
    for name in names or []:
        try:
            parse_table_name(name)
        except ValueError as err:
            raise OpsError('%s: %s, %s' % (option, err, outcome))
