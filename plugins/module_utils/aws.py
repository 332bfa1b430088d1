# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS connection handling shared by the AWS modules: options, client, errors.

Credentials follow the SDK's normal chain (env, profile, instance role) unless given
explicitly. Only botocore is used: boto3 adds nothing the modules need, and importing
it (s3transfer and friends) costs ~0.2 s on every module run. Throttling, 5xx and connection errors are retried by botocore's
"standard" retry mode with backoff; what is left after the retries is turned into
one plain OpsError message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import env_fallback

from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

try:
    import botocore.config
    import botocore.exceptions
    import botocore.session
    HAS_BOTOCORE = True
    BOTOCORE_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the host
    HAS_BOTOCORE = False
    BOTOCORE_IMPORT_ERROR = import_error

USER_AGENT = 'hotelbot.ops/0.1'


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


def client(module, service):
    """A botocore client for service, configured from the module's AWS options."""
    if not HAS_BOTOCORE:
        from ansible.module_utils.basic import missing_required_lib
        module.fail_json(msg=missing_required_lib('botocore'), exception=str(BOTOCORE_IMPORT_ERROR))
    params = module.params
    if params['max_attempts'] < 1:
        raise OpsError('max_attempts must be at least 1, got %d' % params['max_attempts'])
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
        # e.g. a malformed endpoint_url
        raise OpsError('cannot build the %s client: %s' % (service, err))


def error_message(err, doing):
    """One line saying what failed while doing something, without secrets."""
    if HAS_BOTOCORE:
        if isinstance(err, botocore.exceptions.ClientError):
            error = err.response.get('Error', {})
            return '%s failed: %s: %s' % (doing, error.get('Code', 'Error'), error.get('Message', ''))
        if isinstance(err, (botocore.exceptions.EndpointConnectionError,
                            botocore.exceptions.ConnectTimeoutError)):
            return '%s failed: AWS endpoint unreachable (%s) after retries' % (doing, err)
        if isinstance(err, botocore.exceptions.ReadTimeoutError):
            return '%s failed: AWS endpoint did not answer in time (%s)' % (doing, err)
        if isinstance(err, botocore.exceptions.NoCredentialsError):
            return '%s failed: no AWS credentials found (set access_key/secret_key, profile, or the AWS_* environment)' % doing
    return '%s failed: %s' % (doing, err)


def error_code(err):
    """The AWS error code of a ClientError, else None."""
    if HAS_BOTOCORE and isinstance(err, botocore.exceptions.ClientError):
        return err.response.get('Error', {}).get('Code')
    return None


def aws_errors():
    """The exception classes an AWS call can raise that we turn into OpsError."""
    if not HAS_BOTOCORE:
        return ()
    return (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
