"""Run one of the collection's modules the way Ansible does: a Python process that reads its
arguments from a JSON file named in argv[1] and prints its result as JSON."""
import json
import os
import socket
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = os.path.join(ROOT, 'plugins', 'modules')
COLLECTIONS = os.path.join(ROOT, '.collections')


class Outcome:
    """rc, the module's result (None when stdout is not JSON), raw output, peak RSS in bytes."""

    def __init__(self, rc, stdout, stderr, max_rss):
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        self.max_rss = max_rss
        try:
            self.result = json.loads(stdout)
        except ValueError:
            self.result = None


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """For the tests that talk to a local HTTP server: a proxy set in the environment must not catch
    their requests (import it into the test module; it is autouse there)."""
    for name in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)


def closed_port():
    """A local port nothing listens on (bound, then let go): connections to it are refused."""
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def module_names():
    return sorted(name[:-3] for name in os.listdir(MODULES) if name.endswith('.py') and not name.startswith('_'))


def run_module(name, args, timeout=120, env=None, preexec_fn=None):
    """Run plugins/modules/<name>.py with args; the peak RSS is that of this child alone (wait4)."""
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
        args_path = handle.name
    full_env = dict(os.environ, PYTHONPATH=COLLECTIONS + os.pathsep + os.environ.get('PYTHONPATH', ''))
    for proxy in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY'):
        full_env.pop(proxy, None)
    full_env.update(env or {})
    try:
        child = subprocess.Popen([sys.executable, os.path.join(MODULES, name + '.py'), args_path],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=ROOT,
                                 preexec_fn=preexec_fn)
        try:
            stdout, stderr = _communicate(child, timeout)
        finally:
            if child.returncode is None:
                child.kill()
                os.waitpid(child.pid, 0)
        return Outcome(child.returncode, stdout.decode('utf-8', 'replace'), stderr.decode('utf-8', 'replace'),
                       child.max_rss)
    finally:
        os.unlink(args_path)


def _communicate(child, timeout):
    """communicate(), then reap the child with wait4 to read its own resource usage."""
    import threading
    out = {}

    def drain(stream, key):
        out[key] = stream.read()

    readers = [threading.Thread(target=drain, args=(child.stdout, 'out')),
               threading.Thread(target=drain, args=(child.stderr, 'err'))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout)
    if any(reader.is_alive() for reader in readers):
        child.kill()
        for reader in readers:
            reader.join()
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    child.max_rss = usage.ru_maxrss * 1024  # kilobytes on Linux
    return out.get('out', b''), out.get('err', b'')


def spec_params(spec, params):
    """params validated and completed from a module's SPEC by ansible-core's ArgumentSpecValidator
    (defaults filled in, suboptions too), as the module would hand them to its work function.
    A validation error is raised as the OpsError the module would fail with."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

    keys = ('argument_spec', 'mutually_exclusive', 'required_together', 'required_one_of', 'required_if',
            'required_by')
    validation = ArgumentSpecValidator(**dict((k, spec[k]) for k in keys if k in spec)).validate(params)
    if validation.error_messages:
        raise OpsError(validation.errors.msg)
    return validation.validated_parameters


def run_work(spec, work, params, check_mode=False, hide=None):
    """A module's work run in this process as the module runs it: params through spec_params, then
    common.execute (the spec's empty-value and range checks first). Returns the result; a failure is
    raised as an OpsError with the message and the result's fields, as the work raised it."""
    from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, Task, execute

    task = Task(spec_params(spec, params), check_mode=check_mode, hide=hide)
    result = execute(spec, work, task)
    if result.pop('failed', False):
        msg = result.pop('msg')
        changed = result.pop('changed', False)
        raise OpsError(msg, changed, **result)
    return result
