"""AWX job templates as code (examples/awx/job_templates.yml), without an AWX server.

- Every survey spec is checked against AWX's survey rules: the API's survey spec view
  (`JobTemplateSurveySpec._validate_spec_data`, awx/api/views/__init__.py) as a JSON Schema, plus
  what a schema cannot say (unique variables, defaults among the choices, `$encrypted$`), and
  AWX's launch-time answer rules (`SurveyJobTemplateMixin._survey_element_validation`,
  awx/main/models/mixins.py), under which AWX silently drops a default that does not pass.
  Read at ansible/awx e21dd0a0; written here in our own words.
- Each template's playbook runs through ansible-runner the way AWX launches a job: the survey's
  defaults under the answers in env/extravars, `--check` for a check job, `--diff`, `--limit`, the
  project checkout as the working directory and the collection on ANSIBLE_COLLECTIONS_PATH (where a
  project sync installs collections/requirements.yml), against the sandbox. Assertions are on the
  sandbox (ECS revision, API calls, backup files, lock rows) and on runner's status and rc.
"""
import copy
import glob
import json
import os
import re
import shlex
import sys

import ansible_runner
import jsonschema
import pytest
import yaml
from dateutil import rrule as dateutil_rrule

from sandbox import control

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
AWX = os.path.join(ROOT, 'examples', 'awx')
ROOT_PLAYBOOKS = ('rollback.yml', 'hotpatch.yml', 'backup.yml', 'auto_rollback.yml')

with open(os.path.join(AWX, 'job_templates.yml'), encoding='utf-8') as _handle:
    TEMPLATES = {t['name']: t for t in yaml.safe_load(_handle)['hotelbot_awx_templates']}

# The value types AWX accepts for a question's default, per question type (constants.SURVEY_TYPE_MAPPING).
DEFAULT_TYPES = {'text': 'string', 'textarea': 'string', 'password': 'string', 'multiplechoice': 'string',
                 'multiselect': 'string', 'integer': 'integer', 'float': 'number'}

# What AWX's survey spec endpoint checks, element by element. A default of '' is always allowed.
SURVEY_SCHEMA = {
    'type': 'object',
    'required': ['name', 'description', 'spec'],
    'properties': {
        'name': {'type': 'string'},
        'description': {'type': 'string'},
        'spec': {'type': 'array', 'minItems': 1, 'items': {'$ref': '#/$defs/question'}},
    },
    '$defs': {
        'question': {
            'type': 'object',
            'required': ['type', 'question_name', 'variable', 'required'],
            'properties': {
                'type': {'enum': sorted(DEFAULT_TYPES)},
                'question_name': {'type': 'string'},
                'question_description': {'type': 'string'},
                # AWX takes any string; an extra var must be a name Ansible can use.
                'variable': {'type': 'string', 'pattern': '^[A-Za-z_][A-Za-z0-9_]*$'},
                'required': {'type': 'boolean'},
                'min': {'type': ['integer', 'null']},
                'max': {'type': ['integer', 'null']},
                'choices': {'anyOf': [{'type': 'string'}, {'type': 'array', 'items': {'type': 'string'}}]},
            },
            'allOf': [
                {'if': {'properties': {'type': {'enum': ['multiplechoice', 'multiselect']}}},
                 'then': {'required': ['choices']}},
            ] + [
                {'if': {'properties': {'type': {'const': qtype}}},
                 'then': {'properties': {'default': {'anyOf': [{'const': ''}, {'type': json_type}]}}}}
                for qtype, json_type in sorted(DEFAULT_TYPES.items())
            ],
        },
    },
}

# awx.awx 24.6 (awx_collection/plugins/modules/job_template.py and schedule.py): the options the
# templates' data may use. configure.yml passes them on; anything else would be dropped.
JOB_TEMPLATE_OPTIONS = {
    'name', 'description', 'organization', 'job_type', 'inventory', 'project', 'playbook', 'credentials',
    'execution_environment', 'forks', 'limit', 'verbosity', 'extra_vars', 'job_tags', 'skip_tags', 'timeout',
    'diff_mode', 'ask_diff_mode_on_launch', 'ask_variables_on_launch', 'ask_limit_on_launch',
    'ask_job_type_on_launch', 'ask_inventory_on_launch', 'ask_credential_on_launch', 'survey_enabled',
    'survey_spec', 'allow_simultaneous', 'labels', 'become_enabled', 'state'}
SCHEDULE_OPTIONS = {'name', 'description', 'rrule', 'extra_data', 'enabled', 'limit', 'job_type', 'diff_mode',
                    'unified_job_template', 'organization', 'state'}


def choices(question):
    value = question.get('choices', [])
    return [c for c in value.splitlines() if c.strip()] if isinstance(value, str) else list(value)


def spec_errors(survey):
    """What AWX's survey spec endpoint would refuse, and the defaults its launch would drop."""
    errors = [e.message for e in jsonschema.Draft202012Validator(SURVEY_SCHEMA).iter_errors(survey)]
    if errors:
        return errors
    seen = set()
    for index, question in enumerate(survey['spec']):
        variable, qtype = question['variable'], question['type']
        if variable in seen:
            errors.append("'variable' '%s' duplicated in survey question %d" % (variable, index))
        seen.add(variable)
        default = question.get('default')
        if isinstance(default, str) and default.startswith('$encrypted$'):
            # Reserved for a password default already stored in AWX; never valid in a new spec.
            errors.append('$encrypted$ default in survey question %d' % index)
        if qtype in ('multiplechoice', 'multiselect') and default not in (None, ''):
            defaults = default.splitlines() if isinstance(default, str) else default
            if qtype == 'multiplechoice' and len(defaults) > 1:
                errors.append('multiplechoice question %d has more than one default' % index)
            if any(d not in choices(question) for d in defaults):
                errors.append('default of question %d (%s) is not among its choices' % (index, variable))
        if question.get('min') is not None and question.get('max') is not None and question['min'] > question['max']:
            errors.append('min above max in question %d' % index)
        if default is not None:
            errors += ['default of %s: %s' % (variable, e) for e in answer_errors(question, {variable: default})]
    return errors


def answer_errors(question, answers):
    """AWX's check of one question's answer at launch (also applied to defaults, which it drops when they fail)."""
    variable, qtype = question['variable'], question['type']
    if variable not in answers:
        return ["'%s' value missing" % variable] if question['required'] else []
    value = answers[variable]
    question_min = question.get('min') if question.get('min') not in ('', None) else None
    question_max = question.get('max') if question.get('max') not in ('', None) else None
    if qtype in ('text', 'textarea', 'password'):
        if not isinstance(value, str):
            return ['%s expected to be a string' % variable]
        measure = len(value)
    elif qtype == 'integer':
        if type(value) is not int:  # pylint: disable=unidiomatic-typecheck  # AWX refuses a bool here
            return ['%s expected to be an integer' % variable]
        measure = value
    elif qtype == 'float':
        if type(value) not in (int, float):  # pylint: disable=unidiomatic-typecheck
            return ['%s expected to be a number' % variable]
        measure = value
    elif qtype == 'multiselect':
        if not isinstance(value, list):
            return ['%s is expected to be a list' % variable]
        return ['%s: %r is not one of %s' % (variable, v, choices(question)) for v in value if v not in choices(question)]
    else:
        return [] if value in choices(question) else ['%s: %r is not one of %s' % (variable, value, choices(question))]
    errors = []
    if question_min is not None and measure < question_min:
        errors.append('%s value %r is too small (at least %s)' % (variable, value, question_min))
    if question_max is not None and measure > question_max:
        errors.append('%s value %r is too large (at most %s)' % (variable, value, question_max))
    return errors


def awx_extra_vars(template, answers, schedule=False):
    """The extra vars of a job AWX launches from `template` with these survey answers: the survey's
    defaults (those that pass validation), then the answers. Anything outside the survey is refused
    (no template asks for variables on launch); a launch must answer every required question (the
    UI's form starts from the defaults), a schedule need not (its job takes the defaults)."""
    spec = template['survey_spec']['spec']
    unknown = set(answers) - {q['variable'] for q in spec}
    assert not unknown, 'AWX refuses variables outside the survey: %s' % sorted(unknown)
    errors = [e for q in spec for e in answer_errors(q, answers)
              if not (schedule and e.endswith('value missing'))]
    assert not errors, errors
    extra_vars = {q['variable']: q['default'] for q in spec
                  if q.get('default') is not None and not answer_errors(q, {q['variable']: q['default']})}
    extra_vars.update(answers)
    return extra_vars


# ---------------------------------------------------------------- the data, as AWX reads it

@pytest.mark.parametrize('name', sorted(TEMPLATES))
def test_every_survey_is_one_awx_accepts(name):
    template = TEMPLATES[name]
    assert template['survey_enabled'] is True
    assert spec_errors(template['survey_spec']) == []


@pytest.mark.parametrize('change, error', [
    (lambda s: s['spec'][0].update(default='everything'), 'not among its choices'),
    (lambda s: s['spec'][0].pop('choices'), "'choices' is a required property"),
    (lambda s: s['spec'].append(dict(s['spec'][1])), 'duplicated'),
    (lambda s: s['spec'][1].pop('required'), "'required' is a required property"),
    (lambda s: s['spec'][8].update(default='600'), 'is not valid under any of the given schemas'),
    (lambda s: s['spec'][8].update(default=10), 'too small'),
    (lambda s: s['spec'][1].update(type='boolean'), 'is not one of'),
    (lambda s: s['spec'][1].update(default='$encrypted$'), '$encrypted$'),
    (lambda s: s.update(spec=[]), 'should be non-empty'),
    (lambda s: s['spec'][1].update(variable='rollback-target'), 'does not match'),
])
def test_the_survey_rules_refuse_what_awx_refuses(change, error):
    survey = copy.deepcopy(TEMPLATES['hotelbot.ops rollback']['survey_spec'])
    change(survey)
    assert any(error in message for message in spec_errors(survey)), spec_errors(survey)


@pytest.mark.parametrize('name', sorted(TEMPLATES))
def test_survey_variables_are_ones_the_playbook_reads(name):
    template = TEMPLATES[name]
    root = open(os.path.join(ROOT, template['playbook']), encoding='utf-8').read()
    collection_playbook = re.search(r'import_playbook: hotelbot\.ops\.(\w+)', root).group(1)
    source = open(os.path.join(ROOT, 'playbooks', collection_playbook + '.yml'), encoding='utf-8').read()
    for question in template['survey_spec']['spec']:
        assert re.search(r'\b%s\b' % question['variable'], source), (name, question['variable'])


def test_templates_cover_every_entry_point_and_a_check_run():
    assert {t['playbook'] for t in TEMPLATES.values()} == set(ROOT_PLAYBOOKS)
    for template in TEMPLATES.values():
        assert template['job_type'] in ('run', 'check')
        assert template['job_type'] == 'check' or template.get('ask_job_type_on_launch') or \
            template['playbook'] == 'auto_rollback.yml', template['name']
    assert [t['name'] for t in TEMPLATES.values() if t['job_type'] == 'check'] == ['hotelbot.ops rollback plan']
    # Secrets are asked for as passwords (AWX encrypts them and hides them in the job's output).
    secret = re.compile(r'password|secret|token|_key$')
    for template in TEMPLATES.values():
        for question in template['survey_spec']['spec']:
            assert (question['type'] == 'password') == bool(secret.search(question['variable'])), question['variable']


def test_configure_playbook_passes_every_option_the_data_sets():
    with open(os.path.join(AWX, 'configure.yml'), encoding='utf-8') as handle:
        play, = yaml.safe_load(handle)
    modules = {k: task[k] for task in play['tasks'] for k in task if k.startswith('awx.awx.')}
    job_template, schedule = modules['awx.awx.job_template'], modules['awx.awx.schedule']
    assert set(job_template) <= JOB_TEMPLATE_OPTIONS
    assert set(schedule) <= SCHEDULE_OPTIONS
    for template in TEMPLATES.values():
        keys = set(template) - {'schedules'}
        assert keys <= JOB_TEMPLATE_OPTIONS, keys - JOB_TEMPLATE_OPTIONS
        assert keys <= set(job_template), 'configure.yml drops %s' % (keys - set(job_template))
        for entry in template.get('schedules', []):
            assert set(entry) <= set(schedule) - {'unified_job_template', 'organization', 'state'}


def rrule_errors(value):
    """AWX's schedule rrule rules (SchedulePreviewSerializer.validate_rrule), then dateutil must parse it."""
    errors = []
    starts = re.findall(r'DTSTART(;[^:]+)?:[0-9]+T[0-9]+Z?', value)
    if len(starts) != 1:
        errors.append('exactly one DTSTART')
    if re.search(r'DTSTART:[0-9]+T[0-9]+ ', value):
        errors.append('DTSTART needs a time zone')
    rules = re.findall(r'RULE:(\S*)', value)
    if not rules:
        errors.append('an RRULE')
    for rule in rules:
        if 'INTERVAL' not in rule.upper():
            errors.append('INTERVAL required')
        if 'SECONDLY' in rule.upper():
            errors.append('SECONDLY unsupported')
    if re.search(r'EXDATE:|RDATE:', value, re.I):
        errors.append('no EXDATE/RDATE')
    if not errors:
        try:
            dateutil_rrule.rrulestr(value.replace(' RRULE', '\nRRULE'), forceset=True)
        except ValueError as err:
            errors.append(str(err))
    return errors


def test_the_auto_rollback_schedule_is_one_awx_accepts():
    template = TEMPLATES['hotelbot.ops auto-rollback']
    schedule, = template['schedules']
    assert rrule_errors(schedule['rrule']) == []
    assert rrule_errors('DTSTART:20261201T000000 RRULE:FREQ=MINUTELY;INTERVAL=5')  # naive: AWX refuses it
    assert rrule_errors('DTSTART;TZID=UTC:20261201T000000 RRULE:FREQ=MINUTELY')    # no INTERVAL
    occurrences = dateutil_rrule.rrulestr(schedule['rrule'].replace(' RRULE', '\nRRULE'), forceset=True)
    first, second = occurrences[0], occurrences[1]
    assert (second - first).total_seconds() == 300
    # A schedule's extra data is survey answers: the same rules as a launch.
    assert awx_extra_vars(template, schedule['extra_data'], schedule=True) == {
        'hotfix_available': 'false', 'auto_rollback_on_inconclusive': 'hold', 'auto_rollback_wait_timeout': 600}


def awx_project_playbooks(project):
    """The playbooks AWX's project scan lists (Project.playbooks, utils/ansible.could_be_playbook):
    .yml/.yaml files outside roles/, tasks/, group_vars/, host_vars/ and dot directories with a line
    starting a play (hosts:) or importing one."""
    starts_play = re.compile(r'^\s*?-?\s*?(?:hosts|(ansible\.builtin\.)?include|(ansible\.builtin\.)?import_playbook):')
    found = []
    for dirpath, dirnames, filenames in os.walk(project):
        parts = os.path.relpath(dirpath, project).split(os.sep)
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        if {'roles', 'tasks', 'group_vars', 'host_vars'} & set(parts):
            continue
        for filename in filenames:
            if os.path.splitext(filename)[1] in ('.yml', '.yaml'):
                with open(os.path.join(dirpath, filename), encoding='utf-8', errors='ignore') as handle:
                    if any(starts_play.match(line) for line in handle):
                        found.append(os.path.relpath(os.path.join(dirpath, filename), project))
    return sorted(found)


def test_awx_project_scan_lists_the_root_playbooks_and_each_imports_a_collection_playbook():
    listed = awx_project_playbooks(ROOT)
    for playbook in ROOT_PLAYBOOKS:
        assert playbook in listed
        with open(os.path.join(ROOT, playbook), encoding='utf-8') as handle:
            play, = yaml.safe_load(handle)
        fqcn = play['ansible.builtin.import_playbook']
        namespace, name, target = fqcn.split('.')
        assert (namespace, name) == ('hotelbot', 'ops')
        assert os.path.isfile(os.path.join(ROOT, 'playbooks', target + '.yml')), fqcn
    assert {t['playbook'] for t in TEMPLATES.values()} <= set(listed)


# ---------------------------------------------------------------- jobs, as AWX runs them

@pytest.fixture
def awx_job(sandbox, tmp_path):
    """launch(template name, answers, job_type=None, schedule=False) -> (runner, private data dir): an AWX
    job launched from the UI (answers on top of the form's defaults) or by the template's schedule."""
    def launch(name, answers, job_type=None, schedule=False):
        template = TEMPLATES[name]
        job_type = job_type or template['job_type']
        if job_type != template['job_type']:
            assert template.get('ask_job_type_on_launch'), '%s does not ask for the job type' % name
        if schedule:
            extra_vars = awx_extra_vars(template, answers, schedule=True)
        else:
            form = {q['variable']: q['default'] for q in template['survey_spec']['spec'] if 'default' in q}
            form.update(answers)
            extra_vars = awx_extra_vars(template, form)
        args = ['--check'] if job_type == 'check' else []
        if template.get('diff_mode'):
            args.append('--diff')
        if template.get('limit'):
            args += ['--limit', template['limit']]
        data = tmp_path / ('job-%d' % len(list(tmp_path.iterdir())))
        (data / 'env').mkdir(parents=True)
        (data / 'project').symlink_to(ROOT)
        installed = data / 'requirements_collections' / 'ansible_collections' / 'hotelbot'
        installed.mkdir(parents=True)
        (installed / 'ops').symlink_to(ROOT)
        (data / 'env' / 'extravars').write_text(json.dumps(extra_vars))
        (data / 'env' / 'cmdline').write_text(shlex.join(args))
        (data / 'env' / 'envvars').write_text(json.dumps({
            'ANSIBLE_CONFIG': str(data / 'project' / 'ansible.cfg'),
            'ANSIBLE_COLLECTIONS_PATH': str(data / 'requirements_collections'),
            'HOTELBOT_SANDBOX_DIR': str(sandbox.dir),
            'PATH': BIN + os.pathsep + os.environ.get('PATH', ''),
            'ANSIBLE_NOCOLOR': '1'}))
        runner = ansible_runner.run(private_data_dir=str(data), playbook=template['playbook'],
                                    inventory=os.path.join(ROOT, 'inventory', 'sandbox'), quiet=True, timeout=400)
        return runner, data
    return launch


def output(runner):
    return runner.stdout.read()


def test_rollback_template_rolls_back(fresh, awx_job):
    fresh.deploy(4)
    control.reset_calls(fresh.dir)
    runner, _data = awx_job('hotelbot.ops rollback', {'rollback_approved_by': 'alice'})
    assert (runner.status, runner.rc) == ('successful', 0), output(runner)
    assert fresh.revision() == 3
    assert fresh.tags()['hotelbot.ops/rollback'] == 'hotel-voice-bot:4->hotel-voice-bot:3'
    assert fresh.calls()['ecs:UpdateService'] == 1
    assert runner.stats['ok']['sandbox'] > 0 and not runner.stats['failures']


def test_rollback_plan_template_changes_nothing(fresh, awx_job):
    fresh.deploy(4)
    before = fresh.describe()
    tags = fresh.tags()
    control.reset_calls(fresh.dir)
    runner, _data = awx_job('hotelbot.ops rollback plan', {'rollback_target': 'previous'})
    assert (runner.status, runner.rc) == ('successful', 0), output(runner)
    assert fresh.revision() == 4 and fresh.tags() == tags
    assert fresh.describe()['deployments'] == before['deployments']
    assert 'ecs:UpdateService' not in fresh.calls()
    assert fresh.locks() == []


def test_rollback_template_launched_as_check_changes_nothing(fresh, awx_job):
    fresh.deploy(4)
    control.reset_calls(fresh.dir)
    runner, _data = awx_job('hotelbot.ops rollback', {}, job_type='check')
    assert (runner.status, runner.rc) == ('successful', 0), output(runner)
    assert fresh.revision() == 4 and 'ecs:UpdateService' not in fresh.calls()


def test_backup_template_writes_a_verified_backup_and_hides_the_password(fresh, awx_job):
    secret = 'awx-survey-pw-5f0c2e91'
    before = set(glob.glob(os.path.join(fresh.dir, 'backups', '*.manifest.json')))
    runner, data = awx_job('hotelbot.ops backup', {'backup_keep': 3, 'hotelbot_db_password': secret})
    assert (runner.status, runner.rc) == ('successful', 0), output(runner)
    manifests = set(glob.glob(os.path.join(fresh.dir, 'backups', '*.manifest.json'))) - before
    assert len(manifests) == 1
    dump = manifests.pop()[:-len('.manifest.json')]
    assert os.path.getsize(dump) > 0
    assert open(dump + '.sha256', encoding='utf-8').read().split()[1].endswith(os.path.basename(dump))
    with open(dump + '.manifest.json', encoding='utf-8') as handle:
        assert json.load(handle)['database'] == fresh.state['postgres']['database']
    for path in glob.glob(str(data / 'artifacts' / '**' / '*'), recursive=True):
        if os.path.isfile(path):
            with open(path, encoding='utf-8', errors='replace') as handle:
                assert secret not in handle.read(), path


def test_hotpatch_template_launched_as_check_changes_nothing(fresh, awx_job):
    image = fresh.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1'
    control.reset_calls(fresh.dir)
    runner, _data = awx_job('hotelbot.ops hot-patch', {
        'hotpatch_change_id': 'CHG-77', 'hotpatch_tests_passed': 'true', 'hotpatch_image': image}, job_type='check')
    assert (runner.status, runner.rc) == ('successful', 0), output(runner)
    assert fresh.revision() == 3
    calls = fresh.calls()
    assert 'ecs:UpdateService' not in calls and 'ecs:RegisterTaskDefinition' not in calls, calls
    assert fresh.locks() == []


def test_hotpatch_template_refuses_when_the_tests_did_not_pass(fresh, awx_job):
    image = fresh.state['ecs']['images']['3'].rsplit(':', 1)[0] + ':1.2.1'
    control.reset_calls(fresh.dir)
    runner, _data = awx_job('hotelbot.ops hot-patch', {
        'hotpatch_change_id': 'CHG-78', 'hotpatch_tests_passed': 'false', 'hotpatch_image': image})
    assert runner.status == 'failed' and runner.rc != 0
    assert fresh.revision() == 3 and 'ecs:UpdateService' not in fresh.calls()


def test_auto_rollback_template_on_a_healthy_service_changes_nothing(fresh, awx_job):
    fresh.metrics_history()
    control.reset_calls(fresh.dir)
    schedule, = TEMPLATES['hotelbot.ops auto-rollback']['schedules']
    runner, _data = awx_job('hotelbot.ops auto-rollback', schedule['extra_data'], schedule=True)
    assert (runner.status, runner.rc) == ('successful', 0), output(runner)
    assert fresh.revision() == 3 and 'ecs:UpdateService' not in fresh.calls()
    assert fresh.locks() == []
