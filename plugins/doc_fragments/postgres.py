# -*- coding: utf-8 -*-
# Copyright: hotelbot.ops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """libpq connection options shared by the PostgreSQL modules of hotelbot.ops."""

    DOCUMENTATION = r'''
options:
  host:
    description:
      - Host name, IP address or unix socket directory of the server. Falls back to E(PGHOST).
    type: str
    aliases: [login_host]
  port:
    description: Server port. Falls back to E(PGPORT).
    type: int
    aliases: [login_port]
  user:
    description: Role to connect as. Falls back to E(PGUSER).
    type: str
    aliases: [login_user]
  password:
    description:
      - Password. Never shown in output, never put on a command line (client programs get it
        through the environment). Falls back to E(PGPASSWORD); prefer O(passfile).
    type: str
    aliases: [login_password]
  database:
    description:
      - The database to act on. Must not be empty (libpq would fall back to the database named like the user).
      - May also be a connection string, the usual form of E(DATABASE_URL) - a URI
        (C(postgresql://user:password@host:5432/db?sslmode=require)) or libpq C(key=value) pairs, by libpq's own
        rule (it starts with C(postgresql://) or C(postgres://), or holds C(=)). It is taken apart into the options
        above and O(connect_params); a setting given both there and as an option must agree, or the task fails
        naming it. Its password is never shown, and the string is never repeated in messages.
    type: str
    required: true
    aliases: [db, login_db]
  sslmode:
    description: libpq C(sslmode).
    type: str
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  sslrootcert:
    description: CA certificate file for O(sslmode=verify-ca) / O(sslmode=verify-full).
    type: path
  passfile:
    description: A libpq password file (C(.pgpass) format).
    type: path
  connect_timeout:
    description: Seconds to wait for a connection.
    type: int
    default: 10
  connect_params:
    description:
      - Further libpq connection parameters, for example C(application_name) or C(options).
      - For the client programs only parameters that libpq also reads from the environment are
        supported; others are refused with a message naming them.
    type: dict
    default: {}
requirements:
  - psycopg >= 3.1
'''
