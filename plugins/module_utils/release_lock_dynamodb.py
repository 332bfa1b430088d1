# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release lease in a DynamoDB table: the ECS platform's own primitive, no database needed.

Only storage lives here; what a lease means (held, renewed, taken over, broken) is decided once,
for every store of this kind, in release_lock.py (acquire_optimistic, release_optimistic). The
arbiter is DynamoDB's conditional write, so of two concurrent writers exactly one succeeds. The
usual take and give-back are one call each: claim() writes only over no lease or an expired one,
give_back() deletes only our own, and a refusal returns the lease in the way (ALL_OLD), which is
read only where the service does not return it. Every other write names the exact lease it
replaces (owner and expiry as read), and a writer that finds it changed reads again. Breaking
another owner's lease deletes it and writes its audit item in one TransactWriteItems, so there is
no break without its record.

One table with a string hash key `name` holds the leases (name = the lock name) and the audit
events (name = `#event/<id>`). DynamoDB has no server clock in a condition, so expiry is compared
with this machine's clock (UTC epoch seconds): keep the controllers on NTP; a skew of s seconds
moves a lease's end by s, well inside a 90 s ttl.
"""

from __future__ import absolute_import, division, print_function

import time
import uuid

from ansible_collections.hotelbot.ops.plugins.module_utils.aws import aws_error, aws_errors, client, endpoint_of, error_code
from ansible_collections.hotelbot.ops.plugins.module_utils.common import OpsError

EVENT_PREFIX = '#event/'
CONDITION_FAILED = 'ConditionalCheckFailedException'
TRANSACTION_CANCELLED = 'TransactionCanceledException'
# What the role running the playbooks needs on the table (docs/locking.md).
IAM_ACTIONS = ('dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem')
IAM_BREAK_ACTIONS = ('dynamodb:PutItem', 'dynamodb:DeleteItem')  # TransactWriteItems is authorised per item


def create_table_command(table):
    """The one AWS CLI command that creates the lease table."""
    return ('aws dynamodb create-table --table-name %s --attribute-definitions AttributeName=name,AttributeType=S '
            '--key-schema AttributeName=name,KeyType=HASH --billing-mode PAY_PER_REQUEST' % table)


def _number(value):
    """An epoch time as DynamoDB's number text, to the millisecond."""
    return '%.3f' % value


class DynamoDBLeases:
    """Leases in one DynamoDB table, read and written with conditions (see the module docstring).

    A lease is the dict release_lock's helpers take (name, owner, purpose, acquired_at, renewed_at,
    expires_at as epoch seconds, host, os_user) plus `version`: the expiry exactly as stored, which
    a later conditional write names.
    """

    backend = 'dynamodb'

    def __init__(self, params, table, clock=time.time):
        self.params = params
        self.table = table
        self.clock = clock
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = client(self.params, 'dynamodb')
        return self._client

    def label(self):
        return self.table

    # ------------------------------------------------------------------ calls
    def _call(self, doing, operation, **kwargs):
        try:
            return getattr(self.client, operation)(**kwargs)
        except aws_errors() as err:
            code = error_code(err)
            if code in (CONDITION_FAILED, TRANSACTION_CANCELLED):
                raise
            if code == 'ResourceNotFoundException':
                raise OpsError('DynamoDB table %s not found (region %s%s); create it once with: %s'
                               % (self.table, self.params.get('region'), self._endpoint(), create_table_command(self.table)))
            error = aws_error(err, doing, endpoint=endpoint_of(self.client), service='DynamoDB')
            if code in ('AccessDeniedException', 'UnrecognizedClientException'):
                error.msg += '; the role needs %s on table %s' % (', '.join(IAM_ACTIONS), self.table)
            raise error

    def _endpoint(self):
        url = endpoint_of(self._client) if self._client is not None else None
        return ', endpoint %s' % url if url and self.params.get('endpoint_url') else ''

    @staticmethod
    def _failed_condition(err):
        return error_code(err) in (CONDITION_FAILED, TRANSACTION_CANCELLED)

    # ------------------------------------------------------------------ leases
    def read(self, name):
        """The lease of name (consistent read), or None."""
        answer = self._call('reading release lock %r' % name, 'get_item', TableName=self.table,
                            Key={'name': {'S': name}}, ConsistentRead=True)
        item = answer.get('Item')
        return None if item is None else self._lease(item)

    def _lease(self, item):
        def text(key):
            return item[key]['S'] if key in item else None

        def number(key):
            return float(item[key]['N']) if key in item else None

        return dict(name=text('name'), owner=text('owner'), purpose=text('purpose') or '', acquired_at=number('acquired_at'),
                    renewed_at=number('renewed_at'), expires_at=number('expires_at'), host=text('host'),
                    os_user=text('os_user'), version=item['expires_at']['N'])

    def _expected(self, before):
        """The condition that the stored lease is still exactly `before` (or that there is none)."""
        if before is None:
            return dict(ConditionExpression='attribute_not_exists(#n)', ExpressionAttributeNames={'#n': 'name'})
        return dict(ConditionExpression='#o = :seen_owner AND expires_at = :seen_expiry',
                    ExpressionAttributeNames={'#o': 'owner'},
                    ExpressionAttributeValues={':seen_owner': {'S': before['owner']},
                                               ':seen_expiry': {'N': before['version']}})

    def _refusing(self, err, name):
        """The lease that made a conditional write fail: the one the refusal returns (ALL_OLD), else read."""
        item = err.response.get('Item')
        return self._lease(item) if item else self.read(name)

    @staticmethod
    def _item(lease):
        item = {'name': {'S': lease['name']}, 'owner': {'S': lease['owner']}, 'purpose': {'S': lease['purpose'] or ''},
                'acquired_at': {'N': _number(lease['acquired_at'])}, 'renewed_at': {'N': _number(lease['renewed_at'])},
                'expires_at': {'N': _number(lease['expires_at'])}, 'kind': {'S': 'lease'}}
        for key in ('host', 'os_user'):
            if lease.get(key):
                item[key] = {'S': lease[key]}
        return item

    def claim(self, lease, now):
        """Store lease where there is none or an expired one (by now), in one conditional PutItem:
        (True, the lease it replaced or None), or (False, the lease in the way or None when it is gone)."""
        try:
            answer = self._call('taking release lock %r' % lease['name'], 'put_item', TableName=self.table,
                                Item=self._item(lease), ConditionExpression='attribute_not_exists(#n) OR expires_at <= :now',
                                ExpressionAttributeNames={'#n': 'name'},
                                ExpressionAttributeValues={':now': {'N': _number(now)}},
                                ReturnValues='ALL_OLD', ReturnValuesOnConditionCheckFailure='ALL_OLD')
        except aws_errors() as err:
            if self._failed_condition(err):
                return False, self._refusing(err, lease['name'])
            raise
        replaced = answer.get('Attributes')
        return True, None if replaced is None else self._lease(replaced)

    def give_back(self, name, owner):
        """Delete owner's lease of name in one conditional DeleteItem: (True, the lease deleted, or None when
        there was none), or (False, the other owner's lease in the way)."""
        try:
            answer = self._call('releasing release lock %r' % name, 'delete_item', TableName=self.table,
                                Key={'name': {'S': name}}, ConditionExpression='attribute_not_exists(#n) OR #o = :owner',
                                ExpressionAttributeNames={'#n': 'name', '#o': 'owner'},
                                ExpressionAttributeValues={':owner': {'S': owner}},
                                ReturnValues='ALL_OLD', ReturnValuesOnConditionCheckFailure='ALL_OLD')
        except aws_errors() as err:
            if self._failed_condition(err):
                return False, self._refusing(err, name)
            raise
        deleted = answer.get('Attributes')
        return True, None if deleted is None else self._lease(deleted)

    def write(self, lease, before):
        """Store lease in place of before (None: no lease); False when the stored lease is no longer before."""
        try:
            self._call('taking release lock %r' % lease['name'], 'put_item', TableName=self.table, Item=self._item(lease),
                       **self._expected(before))
        except aws_errors() as err:
            if self._failed_condition(err):
                return False
            raise
        return True

    def delete(self, before):
        """Delete the lease, if it is still exactly before; False otherwise."""
        try:
            self._call('releasing release lock %r' % before['name'], 'delete_item', TableName=self.table,
                       Key={'name': {'S': before['name']}}, **self._expected(before))
        except aws_errors() as err:
            if self._failed_condition(err):
                return False
            raise
        return True

    def break_lease(self, before, event):
        """Delete another owner's lease (still exactly before) and write its audit item in one transaction:
        {event_id, at}, or None when the lease changed in between (nothing written)."""
        event_id = uuid.uuid4().hex[:16]
        at = self.clock()
        record = {'name': {'S': EVENT_PREFIX + event_id}, 'kind': {'S': 'event'}, 'lock': {'S': before['name']},
                  'event': {'S': event['event']}, 'owner': {'S': before['owner']},
                  'purpose': {'S': before['purpose'] or ''}, 'broken_by': {'S': event['broken_by']},
                  'at': {'N': _number(at)}, 'expires_at': {'N': before['version']}}
        for key in ('host', 'os_user'):
            if event.get(key):
                record[key] = {'S': event[key]}
        delete = dict(TableName=self.table, Key={'name': {'S': before['name']}}, **self._expected(before))
        put = dict(TableName=self.table, Item=record, ConditionExpression='attribute_not_exists(#n)',
                   ExpressionAttributeNames={'#n': 'name'})
        try:
            self._call('breaking release lock %r' % before['name'], 'transact_write_items',
                       TransactItems=[{'Delete': delete}, {'Put': put}])
        except aws_errors() as err:
            if self._failed_condition(err):
                return None
            raise
        return dict(event_id=event_id, at=at)

    def renew(self, name, owner, ttl):
        """The heartbeat: move the expiry while the lease is still owner's and unexpired; False otherwise."""
        now = self.clock()
        try:
            self._call('renewing release lock %r' % name, 'update_item', TableName=self.table,
                       Key={'name': {'S': name}},
                       UpdateExpression='SET renewed_at = :now, expires_at = :expiry',
                       ConditionExpression='#o = :owner AND expires_at > :now',
                       ExpressionAttributeNames={'#o': 'owner'},
                       ExpressionAttributeValues={':owner': {'S': owner}, ':now': {'N': _number(now)},
                                                  ':expiry': {'N': _number(now + ttl)}})
        except aws_errors() as err:
            if self._failed_condition(err):
                return False
            raise
        return True
