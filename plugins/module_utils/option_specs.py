# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The connection options the AWS and PostgreSQL modules share, apart from the code that uses them: a
module whose spec takes both (release_lock) is imported in the ansible-playbook process by its action
plugin, and its backends' libraries (botocore, psycopg) cost 0.3 s there that a lock elsewhere does
not need. aws.py and postgres.py connect with these options."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.basic import env_fallback


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
        max_attempts=dict(type='int', default=5, context=dict(min=1)),
        connect_timeout=dict(type='float', default=5.0, context=dict(above=0)),
        read_timeout=dict(type='float', default=30.0, context=dict(above=0)),
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
