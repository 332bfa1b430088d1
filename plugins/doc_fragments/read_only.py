# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """The attributes of a hotelbot.ops module that only reads (the *_info modules)."""

    DOCUMENTATION = r'''
attributes:
  check_mode:
    support: full
    description: Reads only; check mode changes nothing.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
'''
