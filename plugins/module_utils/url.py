# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""URLs of every client of the collection: the one check of a URL option (url_problem), joining
and querying, and which parts of a URL or header are credentials (masked in output, hidden)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
import urllib.parse

from ansible_collections.hotelbot.ops.plugins.module_utils.masking import MASK, is_secret_name, mask_userinfo, userinfo_secrets

# Bytes http.client refuses in a URL (it raises InvalidURL when sending).
_URL_BAD_CHARS = re.compile('[\x00-\x20\x7f]')


def url_problem(name, url):
    """None when url is an http:// or https:// URL with a host and a usable port, else a one-line
    message naming the option. A URL that does not parse is not repeated (it may hold a password)."""
    if not isinstance(url, str) or not url.strip():
        return '%s must be an http:// or https:// URL with a host, got an empty value' % name
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as err:
        return '%s is not a valid URL: %s' % (name, str(err).replace('Port', 'port', 1))
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        return '%s must be an http:// or https:// URL with a host, got %r' % (name, mask_url(url))
    if port == 0:
        return '%s is not a valid URL: port 0 is not a port to connect to' % name
    if _URL_BAD_CHARS.search(url):
        return '%s must not contain spaces or control characters (percent-encode them), got %r' % (
            name, mask_url(url))
    return None


def join_url(base_url, path):
    """path appended to base_url with exactly one slash between them (a base path is kept)."""
    if not path:
        return base_url
    return base_url.rstrip('/') + '/' + path.lstrip('/')


def add_query(url, query):
    """url with the pairs of the dict query appended to its query string."""
    if not query:
        return url
    extra = urllib.parse.urlencode([(str(k), '' if v is None else str(v)) for k, v in query.items()])
    base, sep, fragment = url.partition('#')
    base += ('&' if '?' in base else '?') + extra
    return base + sep + fragment


def _secret_key(key, extra_keys):
    name = urllib.parse.unquote_plus(key)
    return name in extra_keys or is_secret_name(name)


def mask_url(url, extra_keys=()):
    """url with credentials masked: values of secret-looking query keys and the userinfo password.

    Other query parameters are kept byte for byte. extra_keys are query keys masked whatever
    their name (the keys of secret_query).
    """
    parts = urllib.parse.urlsplit(mask_userinfo(url))
    netloc = parts.netloc
    query = parts.query
    if query:
        masked = []
        for item in query.split('&'):
            key, eq, value = item.partition('=')
            if eq and value and _secret_key(key, extra_keys):
                item = key + '=' + MASK
            masked.append(item)
        query = '&'.join(masked)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_secrets(url, extra_keys=()):
    """The credential values in url (as sent and decoded): secret query values, userinfo password."""
    found = []
    parts = urllib.parse.urlsplit(url)
    found.extend(userinfo_secrets(url))
    for item in parts.query.split('&') if parts.query else []:
        key, eq, value = item.partition('=')
        if eq and value and _secret_key(key, extra_keys):
            found.extend([value, urllib.parse.unquote_plus(value)])
    return [v for v in found if v]


def url_secrets_any(url, extra_keys=()):
    """url_secrets of any text: a URL urllib cannot split (http://u:pw@[::1) still gives its password."""
    try:
        return url_secrets(url, extra_keys)
    except ValueError:
        return userinfo_secrets(url)


def header_secrets(value):
    """A secret header value, and the credential alone when it has a scheme (Bearer xyz -> xyz)."""
    value = str(value)
    found = [value]
    scheme = re.match(r'^\s*[A-Za-z][\w.-]*\s+(\S+)\s*$', value)
    if scheme:
        found.append(scheme.group(1))
    return found
