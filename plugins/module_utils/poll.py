# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way hotelbot.ops waits: a deadline and a backoff schedule.

Every wait of the collection (a rollout, a lock held by another run, a database to lose its
sessions, an HTTP or Prometheus retry) is poll() with its own probe and schedule, so the
schedules are data (Backoff) and the loop is written once.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time


class Deadline:
    """A time budget from now: remaining() and passed() in seconds (timeout None: no limit)."""

    def __init__(self, timeout, clock=time.monotonic):
        self.timeout = timeout
        self._clock = clock
        self.started = clock()

    def elapsed(self):
        return self._clock() - self.started

    def remaining(self):
        return float('inf') if self.timeout is None else self.timeout - self.elapsed()

    def passed(self):
        return self.remaining() <= 0


class Backoff:
    """Pauses first, first*factor, ... capped at most (and at what the deadline leaves)."""

    def __init__(self, first=0.25, most=5.0, factor=1.6):
        self.first = first
        self.most = most
        self.factor = factor

    def pauses(self):
        pause = self.first
        while True:
            yield pause
            pause = min(pause * self.factor, self.most)


# The schedules of the collection's waits, in one place.
ROLLOUT = Backoff(first=0.25, most=5.0, factor=1.6)      # an ECS deployment (and the next platforms')
CHECKS = Backoff(first=0.1, most=2.0, factor=1.25)      # a started Machine's health checks (Fly): they pass seconds after start
LOCK = Backoff(first=0.5, most=5.0, factor=2.0)          # a release lock held by another run
SESSIONS = Backoff(first=0.05, most=0.05, factor=1.0)    # a database's sessions to go away
RETRY = Backoff(first=1.0, most=30.0, factor=2.0)        # an HTTP request after a 429/5xx/network error


class PollTimeout(Exception):
    """The deadline passed before the probe returned a value. last: the probe's last answer."""

    def __init__(self, waited, last=None):
        super(PollTimeout, self).__init__('gave up after %.1fs' % waited)
        self.waited = waited
        self.last = last


def poll(probe, timeout, backoff=ROLLOUT, progress=None, progress_every=10.0,
         sleep=time.sleep, clock=time.monotonic):
    """Call probe(deadline) until it returns something other than None, and return that.

    probe may raise to stop the wait (its error goes to the caller). When the deadline passes the
    probe has had one last call; PollTimeout then carries how long was waited. progress(waited_s)
    is called at most every progress_every seconds while waiting, for a line the user sees.
    """
    deadline = Deadline(timeout, clock)
    said = 0.0
    for pause in backoff.pauses():
        answer = probe(deadline)
        if answer is not None:
            return answer
        if deadline.passed():
            raise PollTimeout(deadline.elapsed())
        if progress and deadline.elapsed() - said >= progress_every:
            said = deadline.elapsed()
            progress(said)
        sleep(max(0.0, min(pause, deadline.remaining())))
    raise AssertionError('unreachable: Backoff.pauses() never ends')
