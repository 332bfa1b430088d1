# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one duration grammar of hotelbot.ops options (ttl, wait, for_duration, step, ...).

A number of seconds (90, 1.5, "90") or units in decreasing order, each at most once, with
optional spaces and decimals: 500ms, 30s, 10m, 1h30m, 1.5h, 2d, 1w, 1y (Prometheus's units).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math
import re

UNITS = (('y', 365 * 86400.0), ('w', 7 * 86400.0), ('d', 86400.0), ('h', 3600.0), ('m', 60.0),
         ('s', 1.0), ('ms', 0.001))
_PART = re.compile(r'(\d+(?:\.\d+)?)(ms|[ywdhms])')
_ORDER = dict((unit, index) for index, (unit, _size) in enumerate(UNITS))
_SIZE = dict(UNITS)


def parse_duration(value, option='duration', positive=False):
    """Seconds (float) from a duration option's value; ValueError naming the option otherwise.

    positive: 0 is refused too (a window, a step); else only negatives are.
    """
    problem = '%s must be a number of seconds or a duration like 30s, 10m or 1h30m, got %r' % (option, value)
    if isinstance(value, bool) or value is None:
        raise ValueError(problem)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(' ', '')
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_units(text, problem)
    if not math.isfinite(seconds):
        raise ValueError('%s must be a finite duration, got %r' % (option, value))
    if seconds < 0 or (positive and seconds == 0):
        raise ValueError('%s must be %s, got %r' % (option, 'greater than 0' if positive else 'at least 0', value))
    return seconds


def _parse_units(text, problem):
    seconds, pos, last = 0.0, 0, -1
    for match in _PART.finditer(text):
        order = _ORDER[match.group(2)]
        if match.start() != pos or order <= last:
            raise ValueError(problem)
        seconds += float(match.group(1)) * _SIZE[match.group(2)]
        pos, last = match.end(), order
    if not text or pos != len(text):
        raise ValueError(problem)
    return seconds


def promql_duration(seconds):
    """A PromQL duration for seconds: 60 -> '1m', 90 -> '90s', 0.5 -> '500ms'."""
    millis = int(round(seconds * 1000))
    if millis % 1000:
        return '%dms' % millis
    secs = millis // 1000
    for unit, size in (('h', 3600), ('m', 60)):
        if secs % size == 0:
            return '%d%s' % (secs // size, unit)
    return '%ds' % secs


def format_duration(seconds):
    """For people: '45s', '27m', '1h05m', '2d03h' - rounded to the coarsest useful unit."""
    seconds = int(round(max(0.0, float(seconds))))
    if seconds < 60:
        return '%ds' % seconds
    if seconds < 3600:
        minutes, secs = divmod(seconds, 60)
        return '%dm' % minutes if secs == 0 or minutes >= 10 else '%dm%02ds' % (minutes, secs)
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return '%dh%02dm' % (hours, rest // 60)
    days, rest = divmod(seconds, 86400)
    return '%dd%02dh' % (days, rest // 3600)
