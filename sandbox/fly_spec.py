"""Validation of Fly API traffic against Fly's published specs, for the Fly double and its tests.

    validate_request(method, url, headers, body)          -> [] or a list of problems
    validate_response(method, url, status, headers, body) -> [] or a list of problems
    validate_graphql(query, variables)                    -> [] or a list of problems

The Machines API is checked by openapi-core against sandbox/specs/fly-machines-openapi.json
plus OVERLAY, the one list of what that spec is thin on; every entry names the source it
follows (Fly's docs, or the flaps client flyctl uses, github.com/superfly/fly-go). GraphQL is
checked by graphql-core against Fly's schema sandbox/specs/fly-graphql-schema.graphql.

Only the path and query of a URL matter: a request to the double at http://127.0.0.1:N/v1/...
is checked as the same request to the spec's server https://api.machines.dev/v1/... .
"""
from __future__ import annotations

import copy
import functools
import gzip
import json
import os
import urllib.parse
from typing import Any

import graphql
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIResponse
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict
from werkzeug.wrappers import Response

# The copies in sandbox/specs/ (a clean clone has no ../shared); a test keeps them identical to ../shared/specs/.
SPECS_DIR = os.environ.get('HOTELBOT_SPECS_DIR', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'specs'))
MACHINES_SPEC = os.path.join(SPECS_DIR, 'fly-machines-openapi.json')
GRAPHQL_SCHEMA = os.path.join(SPECS_DIR, 'fly-graphql-schema.graphql')


def read_spec(path: str) -> str:
    """A spec's text: the file, or its gzip copy (sandbox/specs keeps them gzipped: third-party text, byte for
    byte, which the collection's sanity checks would otherwise read as ours)."""
    if not os.path.exists(path) and os.path.exists(path + '.gz'):
        with gzip.open(path + '.gz', 'rt', encoding='utf-8') as handle:
            return handle.read()
    with open(path, encoding='utf-8') as handle:
        return handle.read()


SPEC_SERVER = 'https://api.machines.dev'

_ERROR = {'$ref': '#/components/schemas/ErrorResponse'}
_MACHINE = '/apps/{app_name}/machines/{machine_id}'

# The lease as the API returns it: flaps decodes GET/POST .../lease into fly.MachineLease
# {status, data: MachineLeaseData, message, code} (fly-go machine_types.go); the spec's flat
# Lease is what sits in `data`.
_LEASE_ENVELOPE = {
    'type': 'object',
    'required': ['status', 'data'],
    'properties': {
        'status': {'type': 'string'},
        'data': {'$ref': '#/components/schemas/Lease'},
        'message': {'type': 'string'},
        'code': {'type': 'string'},
    },
}

# (where, what, why). `where` is a path of keys into the spec document; `what` is merged into
# the object found there (dicts merge key by key, anything else replaces).
OVERLAY: list[tuple[tuple[str, ...], Any, str]] = [
    (('components', 'schemas', 'Machine', 'properties'),
     {'version': {'type': 'string'}, 'cordoned': {'type': 'boolean'}},
     'fly-go machine_types.go Machine: `Version string json:"version"`, `Cordoned bool '
     'json:"cordoned"`; Fly docs "Machines resource": version is the Machine version ID'),
    (('components', 'schemas', 'LeaseEnvelope'), _LEASE_ENVELOPE,
     'fly-go machine_types.go MachineLease/MachineLeaseData (the response envelope of the '
     'lease endpoints); flyctl `machine leases view` reads lease.Data.Nonce/Owner/ExpiresAt'),
    (('paths', _MACHINE + '/lease', 'get', 'responses'),
     {'200': {'description': 'OK', 'content': {'application/json': {
         'schema': {'$ref': '#/components/schemas/LeaseEnvelope'}}}},
      '404': {'description': 'Not Found', 'content': {'application/json': {'schema': _ERROR}}}},
     'fly-go MachineLease envelope; no lease -> 404 "lease not found" (flyctl '
     'internal/command/machine/leases.go matches " lease not found")'),
    (('paths', _MACHINE + '/lease', 'post', 'responses', '201', 'content', 'application/json',
      'schema'), {'$ref': '#/components/schemas/LeaseEnvelope'},
     'fly-go flaps AcquireLease/RefreshLease decode into fly.MachineLease'),
    (('paths', _MACHINE + '/lease', 'post', 'requestBody', 'required'), False,
     'fly-go flaps AcquireLease sends POST .../lease?ttl=N with no body'),
    (('paths', _MACHINE + '/lease', 'post', 'parameters'),
     [{'name': 'app_name', 'in': 'path', 'required': True, 'schema': {'type': 'string'}},
      {'name': 'machine_id', 'in': 'path', 'required': True, 'schema': {'type': 'string'}},
      {'name': 'fly-machine-lease-nonce', 'in': 'header', 'schema': {'type': 'string'}},
      {'name': 'ttl', 'in': 'query', 'schema': {'type': 'integer'}}],
     'fly-go flaps AcquireLease/RefreshLease: `?ttl=` query parameter'),
    (('paths', _MACHINE + '/wait', 'get', 'responses', '408'),
     {'description': 'Request Timeout', 'content': {'application/json': {'schema': _ERROR}}},
     'Fly docs "Wait for a Machine to reach a specified state": 408 when the timeout elapses; '
     'flyctl internal/flapsutil/retry.go treats 408 as a timeout'),
    (('paths', _MACHINE + '/start', 'post', 'responses', '200', 'content'),
     {'application/json': {'schema': {'type': 'object', 'properties': {
         'message': {'type': 'string'}, 'status': {'type': 'string'},
         'previous_state': {'type': 'string'}}}}},
     'fly-go machine_types.go MachineStartResponse {message, status, previous_state}, which flaps '
     'Start decodes the answer into'),
    (('paths', _MACHINE + '/metadata', 'patch', 'operationId'), 'Machines_patch_metadata',
     'the spec gives PUT and PATCH .../metadata the same operationId, which OpenAPI 3.0 forbids '
     '(openapi-spec-validator refuses the file); the path and method are unchanged'),
]

# Answers every Machines operation can give besides the spec's, all with Fly's ErrorResponse
# body: 401 bad token (fly-go flaps_apps_test.go: `{"error":"unauthorized"}`), 404 unknown app
# or Machine, 409 a lease held by someone else and 412 a stale version (fly-go flaps_error.go,
# flyctl deploy retries on both), 429/503 throttling and outages (flyctl
# internal/flapsutil/retry.go retries 408, 429 and 5xx).
EXTRA_ERROR_STATUSES = {'401': 'Unauthorized', '404': 'Not Found', '409': 'Conflict',
                        '412': 'Precondition Failed', '429': 'Too Many Requests',
                        '503': 'Service Unavailable'}
EXTRA_ERRORS_SOURCE = ('fly-go flaps_error.go and flaps_apps_test.go; flyctl '
                       'internal/flapsutil/retry.go')


def _merge(target: dict, where: tuple[str, ...], what: Any) -> None:
    for key in where[:-1]:
        target = target.setdefault(key, {})
    last = where[-1]
    if isinstance(what, dict) and isinstance(target.get(last), dict):
        for key, value in what.items():
            target[last][key] = copy.deepcopy(value)
    else:
        target[last] = copy.deepcopy(what)


def spec_with_overlay() -> dict[str, Any]:
    """The Machines spec with OVERLAY and the extra error answers applied."""
    spec = json.loads(read_spec(MACHINES_SPEC))
    for where, what, _source in OVERLAY:
        _merge(spec, where, what)
    for path, item in spec['paths'].items():
        if not path.startswith('/apps/{app_name}'):
            continue
        for operation in item.values():
            responses = operation.setdefault('responses', {})
            for answer in responses.values():
                # The spec writes `content: {}` for "no body"; openapi-core reads an empty map as
                # "a body of no known type" and refuses every answer, even an empty 204.
                if answer.get('content') == {}:
                    del answer['content']
            for status, description in EXTRA_ERROR_STATUSES.items():
                responses.setdefault(status, {'description': description, 'content': {
                    'application/json': {'schema': _ERROR}}})
    return spec


@functools.lru_cache(maxsize=1)
def _openapi() -> OpenAPI:
    # Checking the spec document itself takes seconds on every start; the tests do it once
    # (tests/unit/test_fly_double.py), so the double starts without it.
    return OpenAPI.from_dict(spec_with_overlay(), config=Config(spec_validator_cls=None))


def warm_up() -> None:
    """Build both validators now (openapi-core checks the spec itself first: seconds)."""
    _openapi()
    graphql_schema()


@functools.lru_cache(maxsize=1)
def graphql_schema() -> graphql.GraphQLSchema:
    """Fly's GraphQL schema (built once: the file is 190 kB)."""
    return graphql.build_schema(read_spec(GRAPHQL_SCHEMA))


def _spec_url(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.path, parts.query


def _as_bytes(body: Any) -> bytes:
    if body is None:
        return b''
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode('utf-8')
    return json.dumps(body).encode('utf-8')


def _problems(err: Exception) -> list[str]:
    """openapi-core's finding, with one line per schema violation when it has them."""
    details = getattr(err, 'schema_errors', None) or getattr(err.__cause__, 'schema_errors', None)
    if not details:
        return [str(err.__cause__ or err)]
    return ['%s: %s' % ('/'.join(str(p) for p in detail.absolute_path) or '(body)', detail.message)
            for detail in details]


class _SpecRequest:
    """One request as openapi-core reads it (its Request protocol). The path stays as sent,
    percent-escapes and all: a metadata key `hotelbot.ops%2Flast-stable` is one path segment,
    as it is to the double's router."""

    def __init__(self, method: str, url: str, headers: dict[str, str] | None, body: Any) -> None:
        path, query = _spec_url(url)
        self.host_url, self.path, self.method = SPEC_SERVER, path, method.lower()
        self.body = _as_bytes(body) or None
        # the Host header would name the double, not the spec's server
        given = Headers([(k, v) for k, v in (headers or {}).items() if k.lower() != 'host'])
        self.content_type = (given.get('Content-Type') or
                             ('application/json' if self.body else 'application/octet-stream')).lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
            header=given, cookie=ImmutableMultiDict())


def validate_request(method: str, url: str, headers: dict[str, str] | None = None,
                     body: Any = None) -> list[str]:
    """Problems of one Machines API request against the spec (+ overlay); [] when valid.
    body: bytes/str as sent, or a JSON value."""
    openapi = _openapi()
    request = _SpecRequest(method, url, headers, body)
    try:
        openapi.validate_request(request)
    except Exception as err:  # openapi-core raises one of many error classes; all are findings
        return ['%s %s: %s' % (method.upper(), _spec_url(url)[0], p) for p in _problems(err)]
    return []


def validate_response(method: str, url: str, status: int, headers: dict[str, str] | None = None,
                      body: Any = None) -> list[str]:
    """Problems of one Machines API response to (method, url) against the spec; [] when valid."""
    openapi = _openapi()
    request = _SpecRequest(method, url, None, None)
    data = _as_bytes(body)
    given = dict(headers or {})
    if data and not any(k.lower() == 'content-type' for k in given):
        given['Content-Type'] = 'application/json'
    response = WerkzeugOpenAPIResponse(Response(data, status=status, headers=given))
    try:
        openapi.validate_response(request, response)
    except Exception as err:  # as above
        return ['%s %s -> %s: %s' % (method.upper(), _spec_url(url)[0], status, p)
                for p in _problems(err)]
    return []


def validate_graphql(query: str, variables: dict[str, Any] | None = None) -> list[str]:
    """Problems of one GraphQL request against Fly's schema (syntax, fields, arguments and the
    variables' types); [] when valid."""
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError as err:
        return [err.message]
    errors = graphql.validate(graphql_schema(), document)
    if errors:
        return [err.message for err in errors]
    problems = []
    for definition in document.definitions:
        if isinstance(definition, graphql.OperationDefinitionNode):
            coerced = graphql.execution.values.get_variable_values(
                graphql_schema(), definition.variable_definitions or [], variables or {})
            if isinstance(coerced, list):
                problems.extend(err.message for err in coerced)
    return problems
