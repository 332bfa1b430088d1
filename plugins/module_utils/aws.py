# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS connection handling shared by the AWS modules: options, client, errors.

Credentials follow the SDK's normal chain (env, profile, instance role) unless given
explicitly. Only botocore is used: boto3 adds nothing the modules need, and importing
it (s3transfer and friends) costs ~0.2 s on every module run. Throttling, 5xx and connection errors are retried by botocore's
"standard" retry mode with backoff; what is left after the retries is turned into
one plain AwsError message, which says whether it was transient (a wait may try again).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import types
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import without_userinfo

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
ENDPOINT_SCHEMES = ('http', 'https')
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


def aws_argument_spec():
    """Options every AWS module takes (documented in doc_fragments/aws.py)."""
    return dict(
        region=dict(type='str', aliases=['aws_region'],
                    fallback=(env_fallback, ['AWS_REGION', 'AWS_DEFAULT_REGION'])),
        endpoint_url=dict(type='str', aliases=['aws_endpoint_url'],
                          fallback=(env_fallback, ['AWS_ENDPOINT_URL'])),
        profile=dict(type='str', aliases=['aws_profile'],
                     fallback=(env_fallback, ['AWS_PROFILE'])),
        access_key=dict(type='str', aliases=['aws_access_key_id'], no_log=False,
                        fallback=(env_fallback, ['AWS_ACCESS_KEY_ID'])),
        secret_key=dict(type='str', aliases=['aws_secret_access_key'], no_log=True,
                        fallback=(env_fallback, ['AWS_SECRET_ACCESS_KEY'])),
        session_token=dict(type='str', aliases=['aws_session_token'], no_log=True,
                           fallback=(env_fallback, ['AWS_SESSION_TOKEN'])),
        max_attempts=dict(type='int', default=5),
        connect_timeout=dict(type='float', default=5.0),
        read_timeout=dict(type='float', default=30.0),
    )


def check_endpoint_url(url):
    """Refuse an endpoint_url botocore would only trip over at the first call."""
    if url is None:
        return
    shown = without_userinfo(url)
    try:
        parts = urlsplit(url)
        port = parts.port   # raises ValueError when out of range or not a number
    except ValueError as err:
        raise OpsError('endpoint_url %r is not a valid URL: %s' % (shown, err))
    if parts.scheme not in ENDPOINT_SCHEMES:
        raise OpsError('endpoint_url %r must start with http:// or https://' % shown)
    if not parts.hostname:
        raise OpsError('endpoint_url %r has no host' % shown)
    if port == 0:
        raise OpsError('endpoint_url %r: port 0 is not a port to connect to (1-65535)' % shown)


def client(module, service):
    """A botocore client for service, configured from the module's AWS options."""
    if not HAS_BOTOCORE:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib('botocore'), exception=str(BOTOCORE_IMPORT_ERROR))
    params = module.params
    if params['max_attempts'] < 1:
        raise OpsError('max_attempts must be at least 1, got %d' % params['max_attempts'])
    for option in ('connect_timeout', 'read_timeout'):
        if params[option] <= 0:
            raise OpsError('%s must be more than 0 seconds, got %s' % (option, params[option]))
    check_endpoint_url(params['endpoint_url'])
    try:
        session = botocore.session.Session(profile=params['profile'])
        config = botocore.config.Config(
            # total_max_attempts counts the first try; botocore's max_attempts would not.
            retries={'total_max_attempts': params['max_attempts'], 'mode': 'standard'},
            connect_timeout=params['connect_timeout'],
            read_timeout=params['read_timeout'],
            user_agent_extra=USER_AGENT,
        )
        return session.create_client(
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


def _one_line(text):
    text = ' '.join(str(text).split())
    return text if len(text) <= SHOWN_BODY_CHARS else text[:SHOWN_BODY_CHARS] + '...'


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
                                          'not an AWS error: %s' % _one_line(body))
                if status and status < 500:
                    return not_aws_message(endpoint, service, doing, answer)
                return '%s failed: %s from %s' % (doing, answer, endpoint or 'the AWS endpoint')
            return '%s failed: %s: %s' % (doing, error.get('Code', 'Error'), _one_line(error.get('Message', '')))
        if isinstance(err, (botocore.exceptions.EndpointConnectionError,
                            botocore.exceptions.ConnectTimeoutError)):
            return '%s failed: AWS endpoint unreachable (%s) after retries' % (doing, err)
        if isinstance(err, botocore.exceptions.ReadTimeoutError):
            return '%s failed: AWS endpoint did not answer in time (%s)' % (doing, err)
        if isinstance(err, botocore.exceptions.NoCredentialsError):
            return '%s failed: no AWS credentials found (set access_key/secret_key, profile, or the AWS_* environment)' % doing
        if isinstance(err, botocore.parsers.ResponseParserError):
            return not_aws_message(endpoint, service, doing, 'unreadable answer: %s' % _one_line(err))
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
