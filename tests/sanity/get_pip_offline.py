"""Stand-in for ansible-test's downloaded get-pip bootstrap script.

ansible-test fetches get-pip.py from a host this machine cannot reach; it runs the
cached copy as `python get_pip.py [pip options] pip==X` inside the fresh venv. This
does the same with ensurepip (bundled with CPython) and an ordinary `pip install`.
ansible-test runs pip with a trimmed environment, so the machine's CA bundle (needed
behind a TLS-inspecting proxy) is written into the venv's own pip.conf.
"""
import os
import subprocess
import sys

BUNDLES = ('/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt')

bundle = next((path for path in BUNDLES if os.path.exists(path)), None)
if bundle:
    with open(os.path.join(sys.prefix, 'pip.conf'), 'w') as conf:
        conf.write('[global]\ncert = %s\n' % bundle)
# In a child process: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment.
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check'] + args))
