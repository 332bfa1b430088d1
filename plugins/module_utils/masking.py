# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to keep secrets out of what the modules show: names, URLs, connection strings.

  is_secret_name(name)       an environment variable, parameter or header name that looks secret
  mask_value(name, value)    what may be shown of a value: all of it masked for a secret name,
                             else mask_text(value)
  mask_text(text)            text with the secrets inside it masked: URL userinfo passwords (any
                             form: redis://:PW@h, u:p@ss@h), secret-named URL query / DSN / JDBC /
                             ADO.NET / JSON parameters, well-known token formats, webhook URLs
  secret_parts(name, value)  the substrings to register as no_log values, so that Ansible also
                             scrubs them from messages and from -vvvv output

The rules err on the side of hiding: a name that merely contains a secret word is masked
(KEYBOARD_LAYOUT contains `key`, BYPASS_CACHE contains `pass`), because a masked layout
name costs an operator a look at the task definition, and a printed password costs a rotation.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import urllib.parse

MASK = '********'

# Words that mark a secret wherever they occur in a name: API_KEY, apikey, AccountKey, PGPASSWORD.
SECRET_WORDS = ('pass', 'pwd', 'secret', 'token', 'key', 'credential', 'private', 'dsn', 'auth', 'cookie',
                'session', 'signature', 'webhook', 'salt', 'bearer', 'jwt', 'hmac')
# Abbreviations that mark a secret only as a whole word of a name (STRIPE_SK, DB_PW, sig=, GITHUB_PAT):
# as substrings they are in too many ordinary words (task, pinned, design).
SECRET_ABBREVIATIONS = frozenset(('sk', 'pw', 'sig', 'pat', 'psk', 'otp', 'totp', 'pin', 'cred', 'creds', 'sas'))
_SECRET_WORD = re.compile('|'.join(SECRET_WORDS), re.I)
# The words of a name: SNAKE_CASE, kebab-case, dotted and camelCase (AccountKey -> Account, Key).
_NAME_WORDS = re.compile(r'[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+')

# scheme://userinfo@ - the userinfo ends at the *last* @ of the authority (a password may hold @,
# it may not hold / ? # unencoded: clients parse the authority the same way).
_URL_USERINFO = re.compile(r'(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<userinfo>[^\s/?#]*)@', re.I)
# Schemes where a userinfo without ':' is a credential (https://TOKEN@github.com, redis://PW@h),
# not a user name (postgres://bot@h, ssh://git@h keep theirs).
_BARE_TOKEN_SCHEMES = ('http', 'https', 'ws', 'wss', 'redis', 'rediss', 'git+https')
# name=value in URL queries (?a=1&token=t), libpq DSNs (password=PW host=h, values may be quoted),
# JDBC (;password=p), ADO.NET / Azure (Password=p;) and command lines (-Dspring.datasource.password=p).
# An unquoted value ends at ; or at & / whitespace that starts the next name=.
_PARAMETER = re.compile(
    r'''(?:^|(?<=[?&;,\s(-]))(?P<key>[A-Za-z_][\w.-]*)(?P<sep>\s*=\s*)'''
    r'''(?P<value>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"|(?:[^\s;&]|&(?![\w.-]+=)|\s+(?!\s*[\w.-]+\s*=))*)''')
# "name": "value" in JSON or YAML flow text.
_JSON_FIELD = re.compile(r'''(?P<head>(?P<q>["'])(?P<key>[\w.-]{1,64})(?P=q)\s*:\s*)'''
                         r'''(?P<value>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')''')
# Credentials with a recognisable form, whatever they are called.
_TOKEN = re.compile(r'\b(?:[sr]k_(?:live|test)_[0-9A-Za-z]{8,}|sk-[\w-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}'
                    r'|github_pat_\w{20,}|glpat-[\w-]{16,}|xox[abposr]-[\w-]{10,}|AIza[\w-]{30,})')
_PRIVATE_KEY = re.compile(r'-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY-----|.*)', re.S)
# URLs whose path is the credential (incoming webhooks).
_SECRET_URL = re.compile(r'(?P<head>https?://(?:hooks\.slack\.com|(?:[\w-]+\.)*webhook\.office\.com'
                         r'|(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks))(?P<path>/[^\s?#]+)', re.I)


def is_secret_name(name):
    """True when a name (environment variable, query / DSN parameter, header) looks like it holds a secret."""
    name = str(name or '')
    if _SECRET_WORD.search(name):
        return True
    return any(word.lower() in SECRET_ABBREVIATIONS for word in _NAME_WORDS.findall(name))


def _decoded(*values):
    """values and their percent-decoded forms (what a client sends and what it means)."""
    found = []
    for value in values:
        found.extend([value, urllib.parse.unquote_plus(value)])
    return found


def _unquoted(value):
    """A parameter value without its quotes and backslash escapes (libpq / ADO.NET quoting)."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in '\'"':
        return [value, re.sub(r'\\(.)', r'\1', value[1:-1])]
    return [value]


def _userinfo(match):
    scheme, userinfo = match.group('scheme'), match.group('userinfo')
    user, colon, password = userinfo.partition(':')
    if colon:
        if not password:
            return match.group(0), []
        return '%s%s:%s@' % (scheme, user, MASK), _decoded(password)
    if userinfo and scheme[:-3].lower() in _BARE_TOKEN_SCHEMES:
        return '%s%s@' % (scheme, MASK), _decoded(userinfo)
    return match.group(0), []


def _parameter(match):
    raw = match.group('value')
    value = raw.rstrip()
    if not value or not is_secret_name(match.group('key')):
        return match.group(0), []
    quote = value[0] if value[0] in '\'"' and value[-1] == value[0] and len(value) >= 2 else ''
    masked = quote + MASK + quote
    found = []
    for item in _unquoted(value):
        found.extend(_decoded(item))
    return match.group('key') + match.group('sep') + masked + raw[len(value):], found


def _json_field(match):
    value = match.group('value')
    if len(value) <= 2 or not is_secret_name(match.group('key')):
        return match.group(0), []
    return match.group('head') + value[0] + MASK + value[0], _unquoted(value)[1:]


def _whole(match):
    return MASK, [match.group(0)]


def _secret_url(match):
    return match.group('head') + '/' + MASK, [match.group(0), match.group('path')]


# In order: whole secrets first, so that later rules do not see (and half-mask) them.
_RULES = ((_PRIVATE_KEY, _whole), (_SECRET_URL, _secret_url), (_URL_USERINFO, _userinfo),
          (_JSON_FIELD, _json_field), (_PARAMETER, _parameter), (_TOKEN, _whole))
_USERINFO_RULES = ((_URL_USERINFO, _userinfo),)


def _mask(text, rules=_RULES):
    """(text with its secrets masked, the secrets found)."""
    found = []

    def apply(rule):
        def replace(match):
            masked, secrets = rule(match)
            found.extend(secrets)
            return masked
        return replace

    for pattern, rule in rules:
        text = pattern.sub(apply(rule), text)
    return text, found


def _unique(values):
    seen = []
    for value in values:
        # a value already holding a mask was found after an earlier rule masked part of it:
        # its secret part is registered on its own
        if value and MASK not in value and value not in seen:
            seen.append(value)
    return seen


def mask_text(text):
    """text with the secrets inside it masked (see the module docstring); non-strings unchanged."""
    if not isinstance(text, str):
        return text
    return _mask(text)[0]


def mask_userinfo(url):
    """url (or text holding URLs) with only the userinfo credentials masked: for callers that mask
    a URL's query themselves, byte for byte."""
    return _mask(url, _USERINFO_RULES)[0]


def without_userinfo(url):
    """url (or text holding URLs) with every userinfo (user:password@) left out, ending at the last @
    of the authority as clients do: for messages that show where something points, not who logs in."""
    return _URL_USERINFO.sub(lambda match: match.group('scheme'), url)


def userinfo_secrets(url):
    """The userinfo credentials of the URLs in url (raw and percent-decoded); never raises."""
    return _unique(_mask(url, _USERINFO_RULES)[1])


def mask_value(name, value):
    """What may be shown of a named value: MASK for a secret name, else mask_text(value).
    An empty value stays empty (that it is empty is worth knowing, and reveals nothing)."""
    if value is None or value == '':
        return value
    if is_secret_name(name):
        return MASK
    return mask_text(value)


def secret_parts(name, value):
    """The substrings of a named value to register as no_log values (raw and percent-decoded):
    the whole value for a secret name, and every secret inside it."""
    if value is None or value == '':
        return []
    text = str(value)
    whole = [text] if is_secret_name(name) else []
    return _unique(whole + _mask(text)[1])
