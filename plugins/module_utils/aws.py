# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS connection handling shared by the AWS modules: options, client, errors.

A client is built from a module's validated params (client(params, service)), wherever the
work runs: a module process, or the controller's worker. Credentials follow the SDK's normal
chain (env, profile, instance role) unless given explicitly, and belong to the one client (see
_session_for). Only botocore is used: boto3 adds nothing the modules need, and importing it
(s3transfer and friends) costs ~0.2 s on every module run. Throttling, 5xx and connection
errors are retried by botocore's "standard" retry mode with backoff; what is left after the
retries is turned into one plain AwsError message, which says whether it was transient (a wait
may try again).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import types

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError, one_line
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import without_userinfo
from ansible_collections.hotelbot.ops.plugins.module_utils.url import url_problem, url_secrets_any

try:
    import botocore.config
    import botocore.exceptions
    import botocore.parsers
    import botocore.retries.standard
    import botocore.session
    HAS_BOTOCORE = True
    BOTOCORE_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the host
    HAS_BOTOCORE = False
    BOTOCORE_IMPORT_ERROR = import_error

USER_AGENT = 'hotelbot.ops/0.1'
# Longer bodies of a non-AWS answer are cut in messages (an HTML page is not a message).
SHOWN_BODY_CHARS = 120


class AwsError(OpsError):
    """An AWS call that still failed after botocore's retries.

    transient: botocore's standard retry mode would retry it (5xx, throttling, connection
    errors, timeouts), so trying again later may succeed; an access or validation error
    will not. Not a result field: it only tells a wait whether to poll on.
    """

    def __init__(self, msg, transient=False, changed=False, **result):
        super(AwsError, self).__init__(msg, changed=changed, **result)
        self.transient = transient


def check_endpoint_url(url):
    """Refuse an endpoint_url botocore would only trip over at the first call (None: the default)."""
    if url is None:
        return
    problem = url_problem('endpoint_url', url)
    if problem:
        raise OpsError(problem)


def endpoint_secrets(url):
    """The credentials inside an endpoint_url (a proxy's userinfo), to hide wherever they appear."""
    return url_secrets_any(url) if url else []


# The process's botocore session. Its loader keeps the service models and endpoint data it has
# read, so every client after the first costs milliseconds instead of ~0.1 CPU-s; forked
# workers inherit it warm from preload(). It never holds credentials (see _session_for).
_SHARED_SESSION = None


def _shared_session():
    global _SHARED_SESSION  # pylint: disable=global-statement
    if _SHARED_SESSION is None:
        _SHARED_SESSION = botocore.session.Session()
    return _SHARED_SESSION


def preload(service):
    """Create the shared session and read service's model and the endpoint data into it, so that
    a client built later in this process (or in a process forked from it) is cheap. No credentials
    are looked up and nothing is sent."""
    if not HAS_BOTOCORE:
        return
    _shared_session().create_client(service, region_name='us-east-1', aws_access_key_id='preload',
                                    aws_secret_access_key='preload')


def _session_for(params):
    """The session a client for these params comes from.

    Explicit keys go to the client alone, so the shared session serves them. A profile, or the
    SDK's credential chain, gets a session of its own (sharing only the loaded models): a botocore
    session keeps the credentials it resolved, and those must not outlive the task.
    """
    if params['access_key'] and params['secret_key'] and not params['profile']:
        return _shared_session()
    session = botocore.session.Session(profile=params['profile'])
    session.register_component('data_loader', _shared_session().get_component('data_loader'))
    return session


def client(params, service):
    """A botocore client for service, configured from a module's AWS options (its params)."""
    if not HAS_BOTOCORE:
        from ansible.module_utils.basic import missing_required_lib
        raise OpsError('%s (%s)' % (missing_required_lib('botocore'), BOTOCORE_IMPORT_ERROR))
    check_endpoint_url(params['endpoint_url'])
    config = botocore.config.Config(
        # total_max_attempts counts the first try; botocore's max_attempts would not.
        retries={'total_max_attempts': params['max_attempts'], 'mode': 'standard'},
        connect_timeout=params['connect_timeout'],
        read_timeout=params['read_timeout'],
        user_agent_extra=USER_AGENT,
    )
    try:
        return _session_for(params).create_client(
            service, region_name=params['region'], endpoint_url=params['endpoint_url'],
            aws_access_key_id=params['access_key'], aws_secret_access_key=params['secret_key'],
            aws_session_token=params['session_token'], config=config)
    except botocore.exceptions.ProfileNotFound as err:
        raise OpsError('AWS profile not found: %s' % err)
    except botocore.exceptions.NoRegionError:
        raise OpsError('no AWS region: set region (or AWS_REGION) for %s' % service)
    except ValueError as err:
        # what check_endpoint_url does not know botocore refuses (e.g. a host name it rejects)
        raise OpsError('endpoint_url: cannot build the %s client: %s' % (service, err))


def endpoint_of(aws_client):
    """The URL a client talks to, for messages (stand-ins without botocore's meta: None)."""
    meta = getattr(aws_client, 'meta', None)
    url = getattr(meta, 'endpoint_url', None)
    return without_userinfo(url) if url else None


def not_aws_message(endpoint, service, doing, detail):
    """What to say when the endpoint answered, but not the way AWS does."""
    return 'the endpoint %s did not answer as AWS %s does (%s: %s); check endpoint_url' % (
        endpoint or '(default)', service, doing, detail)


def _not_an_aws_error(err):
    """A ClientError botocore made up from an HTTP status because the body held no AWS
    error (botocore then uses the status as the code): an HTML page, a proxy's answer."""
    error = err.response.get('Error', {})
    status = err.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
    return str(error.get('Code', '')) == str(status)


def error_message(err, doing, endpoint=None, service='ECS'):
    """One line saying what failed while doing something, without secrets."""
    if HAS_BOTOCORE:
        if isinstance(err, botocore.exceptions.ClientError):
            error = err.response.get('Error', {})
            status = err.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
            if _not_an_aws_error(err):
                body = str(error.get('Message', ''))
                answer = 'HTTP %s, %s' % (status, 'an HTML page' if body.lstrip().startswith('<') else
                                          'not an AWS error: %s' % one_line(body, SHOWN_BODY_CHARS))
                if status and status < 500:
                    return not_aws_message(endpoint, service, doing, answer)
                return '%s failed: %s from %s' % (doing, answer, endpoint or 'the AWS endpoint')
            return '%s failed: %s: %s' % (doing, error.get('Code', 'Error'), one_line(error.get('Message', ''), SHOWN_BODY_CHARS))
        if isinstance(err, (botocore.exceptions.EndpointConnectionError,
                            botocore.exceptions.ConnectTimeoutError)):
            return '%s failed: AWS endpoint unreachable (%s) after retries' % (doing, err)
        if isinstance(err, botocore.exceptions.ReadTimeoutError):
            return '%s failed: AWS endpoint did not answer in time (%s)' % (doing, err)
        if isinstance(err, botocore.exceptions.NoCredentialsError):
            return '%s failed: no AWS credentials found (set access_key/secret_key, profile, or the AWS_* environment)' % doing
        if isinstance(err, botocore.parsers.ResponseParserError):
            return not_aws_message(endpoint, service, doing, 'unreadable answer: %s' % one_line(err, SHOWN_BODY_CHARS))
    return '%s failed: %s' % (doing, err)


def error_code(err):
    """The AWS error code of a ClientError, else None."""
    if HAS_BOTOCORE and isinstance(err, botocore.exceptions.ClientError):
        return err.response.get('Error', {}).get('Code')
    return None


# Whether an error is transient is botocore's standard retry mode's call (its transient,
# throttling and 429 checks; the modeled ones need the operation's model, which an
# exception no longer has), so a wait retries what a single call retries.
_RETRYABLE = botocore.retries.standard.OrRetryChecker([
    botocore.retries.standard.TransientRetryableChecker(),
    botocore.retries.standard.ThrottledRetryableChecker(),
    botocore.retries.standard.ThrottlingStatusCodeChecker(),
]) if HAS_BOTOCORE else None


def is_transient(err):
    """True for what botocore's standard mode retries: 5xx, throttling, connection errors, timeouts."""
    if not HAS_BOTOCORE:
        return False
    if isinstance(err, botocore.exceptions.ClientError):
        status = err.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
        context = botocore.retries.standard.RetryContext(
            attempt_number=1, parsed_response=err.response, http_response=types.SimpleNamespace(status_code=status))
    elif isinstance(err, botocore.exceptions.BotoCoreError):
        context = botocore.retries.standard.RetryContext(attempt_number=1, caught_exception=err)
    else:   # e.g. an unparseable answer: asking again gets the same one
        return False
    return _RETRYABLE.is_retryable(context)


def aws_error(err, doing, endpoint=None, service='ECS'):
    """The AwsError for a botocore exception raised while doing something."""
    return AwsError(error_message(err, doing, endpoint=endpoint, service=service), transient=is_transient(err))


def aws_errors():
    """The exception classes an AWS call can raise that we turn into OpsError."""
    if not HAS_BOTOCORE:
        return ()
    return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, botocore.parsers.ResponseParserError)
