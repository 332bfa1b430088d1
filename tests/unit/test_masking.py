"""masking.py: what of an environment value, URL or connection string may be shown, and what is
registered as no_log. A table of the forms these values take in real deployments."""
import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import ecs as ecs_utils
from ansible_collections.hotelbot.ops.plugins.module_utils import http as http_utils
from ansible_collections.hotelbot.ops.plugins.module_utils import masking
from ansible_collections.hotelbot.ops.plugins.module_utils.masking import MASK

# (name, value, what may be shown, the secrets that must not be shown)
FORMS = [
    # URL userinfo passwords, whatever their form
    ('REDIS_URL', 'redis://:Redis-pw-7f3@cache.internal:6379/0',
     'redis://:%s@cache.internal:6379/0' % MASK, ['Redis-pw-7f3']),
    ('CACHE_URL', 'rediss://default:Rediss-pw-91@cache.internal:6380',
     'rediss://default:%s@cache.internal:6380' % MASK, ['Rediss-pw-91']),
    ('HEROKU_REDIS', 'redis://Bare-redis-pw-3@h:6379', 'redis://%s@h:6379' % MASK, ['Bare-redis-pw-3']),
    ('BROKER_URL', 'amqp://bot:Amqp-pw-553@mq/vhost', 'amqp://bot:%s@mq/vhost' % MASK, ['Amqp-pw-553']),
    ('DATABASE_URL', 'postgres://bot:p@ss-w0rd@db/hotel', 'postgres://bot:%s@db/hotel' % MASK, ['p@ss-w0rd', 'ss-w0rd']),
    ('DATABASE_URL', 'postgresql://bot:pct%40enc-9@db:5432/hotel?sslmode=require',
     'postgresql://bot:%s@db:5432/hotel?sslmode=require' % MASK, ['pct%40enc-9', 'pct@enc-9']),
    ('MONGO_URL', 'mongodb+srv://bot:Mongo-pw-42@cluster0.x.mongodb.net/db?retryWrites=true&w=majority',
     'mongodb+srv://bot:%s@cluster0.x.mongodb.net/db?retryWrites=true&w=majority' % MASK, ['Mongo-pw-42']),
    ('GIT_REMOTE', 'https://ghx-Bare-token-1234@github.com/acme/bot.git',
     'https://%s@github.com/acme/bot.git' % MASK, ['ghx-Bare-token-1234']),
    # parameters named like secrets: JDBC, SQL Server, ADO.NET, Azure, libpq DSN, URL queries, JSON, -D
    ('JDBC_URL', 'jdbc:postgresql://db/hotel?user=bot&password=Jdbc-pw-17&ssl=true',
     'jdbc:postgresql://db/hotel?user=bot&password=%s&ssl=true' % MASK, ['Jdbc-pw-17']),
    ('MSSQL_URL', 'jdbc:sqlserver://db:1433;databaseName=hotel;user=bot;password=Mssql-pw-8;encrypt=true',
     'jdbc:sqlserver://db:1433;databaseName=hotel;user=bot;password=%s;encrypt=true' % MASK, ['Mssql-pw-8']),
    ('ConnectionStrings__Default', 'Server=db;Database=hotel;User Id=bot;Password=Ado-pw-36;',
     'Server=db;Database=hotel;User Id=bot;Password=%s;' % MASK, ['Ado-pw-36']),
    ('AZURE_STORAGE', 'DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=Azure+key/64==;EndpointSuffix=core.windows.net',
     'DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=%s;EndpointSuffix=core.windows.net' % MASK,
     ['Azure+key/64==']),
    ('PG_CONNINFO', "host=db dbname=hotel password='quoted pw-5' user=bot",
     "host=db dbname=hotel password='%s' user=bot" % MASK, ['quoted pw-5']),
    ('PG_CONNINFO', 'host=db password=Dsn-pw-21 user=bot', 'host=db password=%s user=bot' % MASK, ['Dsn-pw-21']),
    ('CALLBACK', 'https://h/x?token=Query-tok-44&lang=en', 'https://h/x?token=%s&lang=en' % MASK, ['Query-tok-44']),
    ('EXPORT_LINK', 'https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=Sig0123abcd',
     'https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=%s' % MASK, ['Sig0123abcd']),
    ('EXPORT_URL', 'https://acme.blob.core.windows.net/c?sv=2022&sig=Azure%2Bsig99', 'https://acme.blob.core.windows.net/c?sv=2022&sig=%s'
     % MASK, ['Azure%2Bsig99', 'Azure+sig99']),
    ('JAVA_OPTS', '-Xmx1g -Dspring.datasource.password=Java-pw-63 -Dfile.encoding=UTF-8',
     '-Xmx1g -Dspring.datasource.password=%s -Dfile.encoding=UTF-8' % MASK, ['Java-pw-63']),
    ('APP_CONFIG', '{"user": "bot", "password": "Json-pw-29", "port": 5432}',
     '{"user": "bot", "password": "%s", "port": 5432}' % MASK, ['Json-pw-29']),
    # credentials recognisable by their form, and URLs that are themselves a secret
    ('ALERTS', 'https://hooks.slack.com/services/T0AAA/B0BBB/SlackPath123', 'https://hooks.slack.com/%s' % MASK,
     ['/services/T0AAA/B0BBB/SlackPath123', 'SlackPath123']),
    ('CHANNEL', 'xoxb-1234567890-Slack0token', MASK, ['xoxb-1234567890-Slack0token']),
    ('PAYMENTS', 'sk_live_Stripe0key12345', MASK, ['sk_live_Stripe0key12345']),
    ('TLS_BUNDLE', '-----BEGIN RSA PRIVATE KEY-----\nMIIEkey0data\n-----END RSA PRIVATE KEY-----', MASK, ['MIIEkey0data']),
    # names that say secret: the whole value is masked
    ('SMTP_PWD', 'smtp-plain-1', MASK, ['smtp-plain-1']),
    ('STRIPE_SK', 'stripe-key-2', MASK, ['stripe-key-2']),
    ('AWS_SECRET_ACCESS_KEY', 'wJalrXUtnFEMI/K7MDENG', MASK, ['wJalrXUtnFEMI/K7MDENG']),
    ('DB_PASS', 'db-pass-3', MASK, ['db-pass-3']),
    ('DB_PW', 'db-pw-4', MASK, ['db-pw-4']),
    ('GITHUB_TOKEN', 'gh-token-5', MASK, ['gh-token-5']),
    ('GITHUB_PAT', 'gh-pat-6', MASK, ['gh-pat-6']),
    ('OPENAI_API_KEY', 'openai-key-7', MASK, ['openai-key-7']),
    ('SENTRY_DSN', 'https://Sentry0key@o1.ingest.sentry.io/42', MASK, ['https://Sentry0key@o1.ingest.sentry.io/42']),
    ('GOOGLE_APPLICATION_CREDENTIALS', '/secrets/gcp.json', MASK, ['/secrets/gcp.json']),
    ('SLACK_WEBHOOK_URL', 'https://hooks.slack.com/services/T1/B2/Webhook0path', MASK,
     ['https://hooks.slack.com/services/T1/B2/Webhook0path']),
    ('OAUTH_CLIENT_CREDENTIALS', 'id:secret-8', MASK, ['id:secret-8']),
    ('apiKey', 'camel-key-9', MASK, ['camel-key-9']),
    # err on hiding: names that merely contain a secret word are masked too
    ('KEYBOARD_LAYOUT', 'de-nodeadkeys', MASK, []),
    # readable: nothing secret in them
    ('LOG_LEVEL', 'info', 'info', []),
    ('PORT', '8080', '8080', []),
    ('APP_URL', 'https://bot.example/api?lang=en', 'https://bot.example/api?lang=en', []),
    ('DB_URL', 'postgres://bot@db/hotel', 'postgres://bot@db/hotel', []),
    ('FEATURES', 'a=1;b=2', 'a=1;b=2', []),
    ('TASK_ROLE', 'design', 'design', []),
    ('EMPTY_SECRET', '', '', []),
]


@pytest.mark.parametrize('name, value, shown, secrets', FORMS, ids=['%s-%d' % (f[0], i) for i, f in enumerate(FORMS)])
def test_real_world_forms_are_masked_and_registered(name, value, shown, secrets):
    assert masking.mask_value(name, value) == shown
    registered = masking.secret_parts(name, value)
    for secret in secrets:
        assert secret not in shown
        # registered whole or as a part that Ansible's no_log scrubbing covers
        assert any(secret in part for part in registered), (secret, registered)
    if not secrets and shown == value:
        assert registered == []


@pytest.mark.parametrize('name', ['SMTP_PWD', 'STRIPE_SK', 'DB_PASS', 'X_API_KEY', 'GITHUB_TOKEN', 'CLIENT_SECRET',
                                  'GOOGLE_APPLICATION_CREDENTIALS', 'SENTRY_DSN', 'SLACK_WEBHOOK_URL', 'sig', 'Pwd',
                                  'X-Amz-Signature', 'AccountKey', 'sslpassword', 'Authorization', 'X-Auth', 'Cookie'])
def test_secret_names(name):
    assert masking.is_secret_name(name)


@pytest.mark.parametrize('name', ['LOG_LEVEL', 'PORT', 'APP_URL', 'REGION', 'user', 'dbname', 'lang', 'limit',
                                  'Content-Type', 'Accept', 'X-Request-Id', 'TASK_COUNT', 'PINNED_VERSION',
                                  'ASK_TIMEOUT', 'retryWrites', None, ''])
def test_names_that_stay_readable(name):
    assert not masking.is_secret_name(name)


def test_mask_text_masks_several_urls_in_one_value():
    text = 'redis://:First-pw-1@h1:6379,redis://:Second-pw-2@h2:6379'
    assert masking.mask_text(text) == 'redis://:%s@h1:6379,redis://:%s@h2:6379' % (MASK, MASK)
    assert set(masking.secret_parts('NODES', text)) == {'First-pw-1', 'Second-pw-2'}


def test_non_strings_pass_through_unless_the_name_is_secret():
    assert masking.mask_value('PORT', 8080) == 8080 and masking.mask_value('PIN', 1234) == MASK
    assert masking.mask_text(None) is None and masking.secret_parts('PORT', None) == []


def test_ecs_environment_and_diff_use_the_shared_masking():
    old = dict(containerDefinitions=[dict(name='bot', image='bot:1', environment=[
        dict(name='REDIS_URL', value='redis://:Old-redis-pw@h:6379/0'), dict(name='SMTP_PWD', value='Old-smtp-pw')])])
    new = dict(containerDefinitions=[dict(name='bot', image='bot:2', environment=[
        dict(name='REDIS_URL', value='redis://:New-redis-pw@h:6379/0'), dict(name='SMTP_PWD', value='New-smtp-pw'),
        dict(name='JDBC_URL', value='jdbc:postgresql://db/x?user=u&password=New-jdbc-pw')])])
    shown = repr(ecs_utils.environment(new)) + repr(ecs_utils.environment_diff(old, new))
    hidden = ecs_utils.secret_values(old) + ecs_utils.secret_values(new)
    for secret in ('Old-redis-pw', 'New-redis-pw', 'Old-smtp-pw', 'New-smtp-pw', 'New-jdbc-pw'):
        assert secret not in shown and secret in hidden
    assert ecs_utils.environment_diff(old, new)['bot']['changed']['REDIS_URL'] == {
        'from': 'redis://:%s@h:6379/0' % MASK, 'to': 'redis://:%s@h:6379/0' % MASK}


def test_http_urls_use_the_shared_rules():
    url = 'https://Bare-token-77@h/p?sig=Sig-value-1&X-Amz-Signature=Amz-sig-2&lang=en'
    assert http_utils.mask_url(url) == 'https://%s@h/p?sig=%s&X-Amz-Signature=%s&lang=en' % (MASK, MASK, MASK)
    assert {'Bare-token-77', 'Sig-value-1', 'Amz-sig-2'} <= set(http_utils.url_secrets(url))
