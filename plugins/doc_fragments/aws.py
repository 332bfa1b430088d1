# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """AWS connection options shared by every AWS module of hotelbot.ops."""

    DOCUMENTATION = r'''
options:
  region:
    description:
      - The AWS region.
      - Falls back to the E(AWS_REGION) or E(AWS_DEFAULT_REGION) environment variables, then the profile.
    type: str
    aliases: [aws_region]
  endpoint_url:
    description:
      - Talk to this endpoint instead of the public AWS one (a VPC endpoint, a proxy, or the local sandbox).
      - An V(http://) or V(https://) URL with a host and, if given, a port from 1 to 65535; anything else is
        refused before any call. An endpoint that answers, but not as AWS does (for example with an HTML page),
        is reported as such, naming the URL.
      - Falls back to the E(AWS_ENDPOINT_URL) environment variable.
    type: str
    aliases: [aws_endpoint_url]
  profile:
    description:
      - A named profile from the AWS shared config/credentials files.
      - Falls back to the E(AWS_PROFILE) environment variable.
    type: str
    aliases: [aws_profile]
  access_key:
    description:
      - AWS access key id. When unset, the AWS SDK's normal credential chain applies
        (environment, shared files, container or instance role).
      - Falls back to the E(AWS_ACCESS_KEY_ID) environment variable.
    type: str
    aliases: [aws_access_key_id]
  secret_key:
    description:
      - AWS secret access key. Never shown in output.
      - Falls back to the E(AWS_SECRET_ACCESS_KEY) environment variable.
    type: str
    aliases: [aws_secret_access_key]
  session_token:
    description:
      - AWS session token for temporary credentials. Never shown in output.
      - Falls back to the E(AWS_SESSION_TOKEN) environment variable.
    type: str
    aliases: [aws_session_token]
  max_attempts:
    description:
      - How many times one API call is tried, counting the first. Throttling, 5xx answers and
        connection errors are retried with botocore's C(standard) backoff; anything still failing
        after the last attempt fails the task with a plain message (a module's wait may poll on, see its own
        options).
      - At least 1.
    type: int
    default: 5
  connect_timeout:
    description: Seconds to wait for a connection to the AWS endpoint (more than 0).
    type: float
    default: 5.0
  read_timeout:
    description: Seconds to wait for an answer from the AWS endpoint (more than 0).
    type: float
    default: 30.0
requirements:
  - botocore >= 1.34
notes:
  - All AWS modules of this collection are in the action group C(group/hotelbot.ops.aws), so
    C(module_defaults) can set region, endpoint and credentials once for a play.
'''

    # The ECS service a module acts on (hotelbot.ops.aws.ecs_service).
    ECS_SERVICE = r'''
options:
  cluster:
    description: Name or ARN of the ECS cluster.
    type: str
    required: true
  service:
    description: Name or ARN of the ECS service.
    type: str
    required: true
'''
