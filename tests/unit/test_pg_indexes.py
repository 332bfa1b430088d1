"""Unit tests of module_utils.pg_indexes: reading pg_restore's post-data script, choosing what is
built as a unique index, and the order of the builds.

The script below has the shape pg_restore 15 prints for `-L <index and constraint entries> -f -`
(a quoted schema, a tablespace change, an entry of two statements). The integration suite runs
the builds against a real server and compares pg_dump --schema-only of source and restore."""
import pytest

from ansible_collections.hotelbot.ops.plugins.module_utils import pg_indexes
from ansible_collections.hotelbot.ops.plugins.module_utils.pg_indexes import Build, parse_script, schedule

LINES = [
    '3215; 2606 16430 CONSTRAINT public bot_messages bot_messages_message_id_key hotelbot',
    '3218; 2606 16428 CONSTRAINT public bot_messages bot_messages_pkey hotelbot',
    '3219; 2606 19271 CONSTRAINT public u u_pk hotelbot',
    '3212; 2606 19261 CONSTRAINT s 2 t t_b_key hotelbot',
    '3220; 1259 19272 INDEX public u_v hotelbot',
    '3216; 1259 16433 INDEX public bot_messages_phone_number_idx hotelbot',
    '3213; 1259 19266 INDEX s 2 t_lower_idx hotelbot',
]

SCRIPT = r"""--
-- PostgreSQL database dump
--

\restrict HgysEH0hGwhJpdmOiVbwWmVrf3XfJhzk300qUUz2aggC8I5hw5SQUznlsT9PyYf

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);
SET client_min_messages = warning;

SET default_tablespace = '';

--
-- Name: bot_messages bot_messages_message_id_key; Type: CONSTRAINT; Schema: public; Owner: hotelbot
--

ALTER TABLE ONLY public.bot_messages
    ADD CONSTRAINT bot_messages_message_id_key UNIQUE (message_id);


--
-- Name: bot_messages bot_messages_pkey; Type: CONSTRAINT; Schema: public; Owner: hotelbot
--

ALTER TABLE ONLY public.bot_messages
    ADD CONSTRAINT bot_messages_pkey PRIMARY KEY (id);


SET default_tablespace = ts1;

--
-- Name: u u_pk; Type: CONSTRAINT; Schema: public; Owner: hotelbot; Tablespace: ts1
--

ALTER TABLE ONLY public.u
    ADD CONSTRAINT u_pk PRIMARY KEY (id);


SET default_tablespace = '';

--
-- Name: t t_b_key; Type: CONSTRAINT; Schema: s 2; Owner: hotelbot
--

ALTER TABLE ONLY "s 2".t
    ADD CONSTRAINT t_b_key UNIQUE (b) DEFERRABLE;


--
-- Name: u_v; Type: INDEX; Schema: public; Owner: hotelbot
--

CREATE INDEX u_v ON public.u USING btree (v);

ALTER TABLE public.u CLUSTER ON u_v;


--
-- Name: bot_messages_phone_number_idx; Type: INDEX; Schema: public; Owner: hotelbot
--

CREATE INDEX bot_messages_phone_number_idx ON public.bot_messages USING btree (phone_number, created_at);


--
-- Name: t_lower_idx; Type: INDEX; Schema: s 2; Owner: hotelbot
--

CREATE INDEX t_lower_idx ON "s 2".t USING btree (lower(a)) WHERE (b > 3);


--
-- PostgreSQL database dump complete
--

\unrestrict HgysEH0hGwhJpdmOiVbwWmVrf3XfJhzk300qUUz2aggC8I5hw5SQUznlsT9PyYf
"""


def parsed():
    found = parse_script(SCRIPT, LINES)
    assert found is not None
    return found


def test_prelude_is_the_session_settings_without_comments_or_meta_commands():
    prelude, _builds = parsed()
    assert prelude == ['SET statement_timeout = 0;', 'SET lock_timeout = 0;', "SET client_encoding = 'UTF8';",
                       "SELECT pg_catalog.set_config('search_path', '', false);", 'SET client_min_messages = warning;']


def test_each_entry_gets_its_statements_table_and_tablespace():
    _prelude, builds = parsed()
    assert [b.line for b in builds] == LINES
    assert [b.kind for b in builds] == ['CONSTRAINT'] * 4 + ['INDEX'] * 3
    assert [b.table for b in builds] == ['public.bot_messages', 'public.bot_messages', 'public.u', '"s 2".t',
                                         'public.u', 'public.bot_messages', '"s 2".t']
    assert [b.setup for b in builds] == [["SET default_tablespace = '';"]] * 2 + [['SET default_tablespace = ts1;']] + \
        [["SET default_tablespace = '';"]] * 4
    # two statements stay one entry; the SET printed for the next entry is not part of this one
    assert builds[4].statements == 'CREATE INDEX u_v ON public.u USING btree (v);\n\nALTER TABLE public.u CLUSTER ON u_v;'
    assert builds[1].statements == 'ALTER TABLE ONLY public.bot_messages\n    ADD CONSTRAINT bot_messages_pkey PRIMARY KEY (id);'
    assert builds[6].statements.endswith('WHERE (b > 3);')


def test_only_plain_keys_in_the_default_tablespace_become_unique_indexes():
    _prelude, builds = parsed()
    keys = [b.tag for b in builds if b.key]
    assert keys == ['bot_messages bot_messages_message_id_key', 'bot_messages bot_messages_pkey']
    unique, primary = builds[0], builds[1]
    assert unique.sql() == 'CREATE UNIQUE INDEX bot_messages_message_id_key ON public.bot_messages USING btree (message_id);'
    assert unique.attach() == ('ALTER TABLE ONLY public.bot_messages ADD CONSTRAINT bot_messages_message_id_key UNIQUE '
                               'USING INDEX bot_messages_message_id_key')
    assert primary.attach().endswith('PRIMARY KEY USING INDEX bot_messages_pkey')
    # a tablespace, DEFERRABLE, a second statement: run as pg_restore wrote them
    for build in (builds[2], builds[3], builds[4]):
        assert build.key is None and build.sql() == build.statements


@pytest.mark.parametrize('statement', [
    'ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id) INCLUDE (a);',
    'ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_key UNIQUE NULLS NOT DISTINCT (a);',
    'ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_key UNIQUE (a) WITH (fillfactor=70);',
    'ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_x EXCLUDE USING gist (r WITH &&);',
    'ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\nALTER TABLE ONLY public.t REPLICA IDENTITY USING INDEX t_pkey;',
])
def test_other_key_forms_are_not_rewritten(statement):
    build = Build('1; 2606 1 CONSTRAINT public t x o', 'CONSTRAINT', 't x', ["SET default_tablespace = '';"], statement)
    assert build.key is None and build.sql() == statement and build.table == 'public.t'


def test_quoted_names_are_kept_as_printed_and_columns_unquoted():
    build = Build('1; 2606 1 CONSTRAINT s 2 t x o', 'CONSTRAINT', '"t" x', ["SET default_tablespace = '';"],
                  'ALTER TABLE ONLY "s 2"."my ""t"""\n    ADD CONSTRAINT "a key" UNIQUE ("Col", b);')
    assert build.table == '"s 2"."my ""t"""' and build.columns == ['Col', 'b']
    assert build.sql() == 'CREATE UNIQUE INDEX "a key" ON "s 2"."my ""t""" USING btree ("Col", b);'


@pytest.mark.parametrize('damage', [
    lambda s: s.replace('-- Name: u_v; Type: INDEX', '-- Name: u_w; Type: INDEX'),                 # another entry
    lambda s: s.replace('-- Name: u_v; Type: INDEX', '-- Name: u_v; Type: TRIGGER'),               # another type
    lambda s: s.replace('--\n-- Name: t_lower_idx', '--\n-- Nom: t_lower_idx'),                     # one header fewer
    lambda s: s.replace('CREATE INDEX u_v ON public.u USING btree (v);\n\nALTER TABLE public.u CLUSTER ON u_v;', ''),
])
def test_a_script_that_does_not_split_into_the_entries_is_left_to_pg_restore(damage):
    assert parse_script(damage(SCRIPT), LINES) is None


def test_no_entries_parse_to_no_builds():
    assert parse_script('SET lock_timeout = 0;\n', []) == (['SET lock_timeout = 0;'], [])


def test_longest_builds_start_first():
    _prelude, builds = parsed()
    tables = {
        'public.bot_messages': (780 << 20, {'id': 8, 'message_id': 16, 'phone_number': -1, 'created_at': 8}),
        'public.u': (8 << 10, {'id': 4, 'v': 4}),
        '"s 2".t': (64 << 10, {'id': 4, 'a': -1, 'b': 4}),
    }
    order = [b.tag for b in schedule(builds, tables)]
    assert order == [
        'bot_messages_phone_number_idx',                # the big table; text + timestamptz: 32 + 8
        'bot_messages bot_messages_message_id_key',     # uuid: 16
        'bot_messages bot_messages_pkey',               # bigint: 8
        't_lower_idx',                                  # an expression: counted wide
        't t_b_key',                                    # int: 4
        'u u_pk',                                       # int: 4, and equal costs keep TOC order
        'u_v',
    ]
    assert schedule(builds, tables)[0].cost == (780 << 20, pg_indexes.VARIABLE_WIDTH + 8)
