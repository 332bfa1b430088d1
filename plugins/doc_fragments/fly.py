# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Fly.io API options shared by the Fly modules of hotelbot.ops (and release_lock backend=fly)."""

    DOCUMENTATION = r'''
options:
  api_token:
    description:
      - The Fly API token (for example from C(fly tokens create deploy)). Never shown in output, even at C(-vvvv).
      - A C(FlyV1 ...) macaroon token is sent as it is; any other token as a bearer token (C(Authorization) header C(Bearer <token>)).
      - Falls back to the E(FLY_API_TOKEN) environment variable.
    type: str
  api_url:
    description:
      - The Fly Machines API, without the C(/v1) path.
      - An V(http://) or V(https://) URL with a host; the sandbox's double, or a proxy, in place of Fly's.
    type: str
    default: https://api.machines.dev
  graphql_url:
    description:
      - Fly's GraphQL API, where the releases of an app are listed.
    type: str
    default: https://api.fly.io/graphql
  validate_certs:
    description: Verify the APIs' TLS certificates.
    type: bool
    default: true
notes:
  - Every request goes through the collection's one HTTP transport; an answer 429 or 5xx, or none at all, is
    retried with backoff (a C(Retry-After) header is honoured), 4 tries in all.
  - The Fly modules are in the action group C(group/hotelbot.ops.fly), so C(module_defaults) can set the API
    URLs and the token once for a play.
'''
