"""Issue 19, acceptance 1: adding a policy knob is one field in one file.

For every field of every registered policy (its ``knob()`` spec in memory/policies/):

- the node declares ``memory.<field>`` with the spec's default (the default policy's),
  type, description and integer / floating-point range, and validates it;
- config/params.yaml sets it, to that default;
- ``--param <field>=<value>`` is accepted by every eval command that builds a policy
  (perplexity, memory-qa, replay, bench memory/decode/ingest/cpu/engine) and reaches the
  policy it builds.

The checks are one function, :func:`problems`, run on the real registry and on a registry
with one extra knob that nothing else knows, which it must report (so the test can fail).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, List

import pytest
import yaml

from ros2_infmllm import engine
from ros2_infmllm.eval.common import build_policy, cli_overrides
from ros2_infmllm.memory import POLICIES, knobs
from ros2_infmllm.memory.policies import InfMLLMPolicy, knob
from ros2_infmllm.memory.policies.spec import AUTO_RECENT

REPO = Path(__file__).resolve().parents[1]
PARAMS_YAML = REPO / 'config' / 'params.yaml'
#: every eval command that builds a policy: (which parser, arguments before --param)
EVAL_COMMANDS = [('eval', ['perplexity', '--smoke']), ('eval', ['memory-qa', '--smoke']),
                 ('eval', ['replay', '--offline']), ('bench', ['memory', '--smoke']),
                 ('bench', ['decode', '--smoke']), ('bench', ['ingest', '--smoke']),
                 ('bench', ['cpu']), ('bench', ['engine', '--smoke'])]


def _yaml_parameters() -> Dict[str, Any]:
    def flat(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flat(value, f'{prefix}{key}.'))
            else:
                out[f'{prefix}{key}'] = value
        return out
    return flat(yaml.safe_load(PARAMS_YAML.read_text())['/**']['ros__parameters'])


def _text(value: Any) -> str:
    """A value as one writes it after ``--param key=``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _parsers() -> Dict[str, Any]:
    from ros2_infmllm.eval import bench
    from ros2_infmllm.eval.__main__ import build_parser
    return {'eval': build_parser, 'bench': bench.build_parser}


def _param_problems(name: str, value: Any) -> List[str]:
    """Why ``--param name=value`` does not reach the policies of each eval command."""
    from ros2_infmllm.eval.replay import session_config
    out = []
    for which, argv in EVAL_COMMANDS:
        label = f"{which} {argv[0]}"
        try:
            args = _parsers()[which]().parse_args(argv + ['--param', f'{name}={_text(value)}'])
            over = cli_overrides(args)
        except (SystemExit, ValueError) as exc:
            out.append(f'{label}: --param {name}={_text(value)} refused ({exc})')
            continue
        budget = getattr(args, 'budget', None) or (getattr(args, 'budgets', None) or [None])[0]
        got = over.get(name, budget if name == 'budget' else None)
        if got != value or type(got) is not type(value):
            out.append(f'{label}: --param {name}={_text(value)} gave {got!r}')
            continue
        if argv[0] == 'replay':
            cfg = session_config(args, over)
            if getattr(cfg, name) != value:
                out.append(f'{label}: the session config has {name}={getattr(cfg, name)!r}')
            continue
        for policy, cls in POLICIES.items():
            if name in knobs(cls) and name != 'budget':
                have = getattr(build_policy(policy, 1024, over), name)
                if have != value:
                    out.append(f'{label}: build_policy({policy!r}) has {name}={have!r}')
    return out


def problems(policies: Dict[str, type], declared: Dict[str, Any],
             yaml_params: Dict[str, Any]) -> List[str]:
    """Everything that is not derived from the policy specs: [] when all is."""
    from rcl_interfaces.msg import ParameterType
    kinds = {int: ParameterType.PARAMETER_INTEGER, float: ParameterType.PARAMETER_DOUBLE,
             str: ParameterType.PARAMETER_STRING, bool: ParameterType.PARAMETER_BOOL}
    out = []
    for policy, cls in policies.items():
        for name, spec in knobs(cls).items():
            param = f'memory.{name}'
            if param not in declared:
                out.append(f'{policy}.{name}: the node declares no {param}')
                continue
            node = engine.POLICY_KNOBS.get(name)
            default, desc = declared[param]
            if node is None or not node.same_parameter(spec):
                out.append(f'{policy}.{name}: not the engine/node knob {node}')
                continue
            if default != node.default or type(default) is not node.type:
                out.append(f'{param}: node default {default!r}, spec {node.default!r}')
            if desc.type != kinds[spec.type] or desc.description != spec.doc:
                out.append(f'{param}: descriptor type/description {desc.type} '
                           f'{desc.description!r} is not the spec\'s')
            ranges = list(desc.integer_range) + list(desc.floating_point_range)
            want = [] if spec.lo is None else [(spec.lo, spec.hi)]
            if [(r.from_value, r.to_value) for r in ranges] != want:
                out.append(f'{param}: node range {ranges} is not the spec\'s {want}')
            if param not in yaml_params:
                out.append(f'{param}: config/params.yaml has no line for it; add under memory: '
                           f'"# {spec.doc}" and "{name}: {_text(node.default)}"')
            elif yaml_params[param] != node.default:
                out.append(f'{param}: params.yaml says {yaml_params[param]!r}, the node '
                           f'{node.default!r}')
            # an automatic n_recent (-1) is resolved by the policy: probe with a set value
            probe = 64 if name == 'n_recent' and node.default == AUTO_RECENT else node.default
            out += _param_problems(name, probe)
    return out


@pytest.fixture(scope='module')
def live_node():
    """An InfMllmNode in this process (own context, no model loaded), fresh defaults."""
    import rclpy

    from ros2_infmllm.ros import node
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=219)
    n = node.InfMllmNode(context=context)
    try:
        yield n
    finally:
        n.destroy_node()
        context.try_shutdown()


def _declared(n) -> Dict[str, Any]:
    names = list(n.list_parameters(['memory'], 0).names)
    return {p: (n.get_parameter(p).value, n.describe_parameter(p)) for p in names}


def test_every_policy_knob_is_a_node_parameter_a_yaml_line_and_a_param(live_node):
    """The real registry: nothing to report."""
    found = problems(POLICIES, _declared(live_node), _yaml_parameters())
    assert not found, '\n'.join(found)


@dataclass
class _NewKnobPolicy(InfMLLMPolicy):
    """inf_mllm with one knob added and nothing else changed (what a newcomer would do)."""

    shiny: float = knob(0.5, 'a knob nothing else knows yet', lo=0.0, hi=1.0)

    name: ClassVar[str] = 'new_knob'


def test_a_knob_added_only_to_a_policy_is_reported(live_node):
    """A field the node, params.yaml and --param do not know is named, each miss once."""
    found = problems(dict(POLICIES, new_knob=_NewKnobPolicy), _declared(live_node),
                     _yaml_parameters())
    assert found and all('shiny' in p for p in found), found
    assert any('declares no memory.shiny' in p for p in found)


def test_a_missing_yaml_line_and_a_refused_param_are_reported(live_node):
    """Take budget out of params.yaml and make --param refuse kernel: both reported."""
    yaml_params = {k: v for k, v in _yaml_parameters().items() if k != 'memory.budget'}
    found = problems(POLICIES, _declared(live_node), yaml_params)
    assert any('memory.budget: config/params.yaml has no line' in p for p in found), found
    assert any('refused' in p for p in _param_problems('kernel', 'seven'))


def test_node_validates_knobs_through_their_spec(live_node):
    """Values inside the declared range that the spec refuses are rejected with its reason."""
    from rclpy.parameter import Parameter
    res = live_node.set_parameters([Parameter('memory.kernel', value=4)])[0]
    assert not res.successful and 'memory.kernel must be odd' in res.reason, res.reason
    # n_recent is the policy's own min(256, budget // 4) here: 0, and n_sink 4 > 2
    res = live_node.set_parameters([Parameter('memory.budget', value=2)])[0]
    assert not res.successful and 'n_sink + n_recent' in res.reason, res.reason
    assert live_node.get_parameter('memory.budget').value == engine.POLICY_KNOBS[
        'budget'].default


def test_session_config_fields_are_the_knobs():
    """SessionConfig carries one field per knob, with the node's default."""
    fields = {f.name: f for f in dataclasses.fields(engine.SessionConfig)}
    for name, spec in engine.POLICY_KNOBS.items():
        assert fields[name].default == spec.default, name
    assert json.dumps(engine.policy_params(engine.SessionConfig(policy='window'))) == \
        json.dumps({'budget': 1024, 'reposition': True})


@pytest.mark.parametrize('budget', [48, 512, 1024, 4096])
def test_the_node_and_the_eval_build_the_same_policy(budget):
    """A budget alone gives the node's session and every eval task one n_recent (issue 38).

    The default policy is the same in every field; the others have the same n_recent, the
    policy's own min(recent, budget // 4) (their other defaults differ on purpose: the node
    has one value per knob for every policy).
    """
    from ros2_infmllm.memory import make_policy
    for policy in ('inf_mllm', 'h2o', 'snapkv'):
        config = engine.SessionConfig(policy=policy, budget=budget)
        node = make_policy(policy, **engine.policy_params(config))
        evaluated = build_policy(policy, budget)
        assert node.n_recent == evaluated.n_recent == min(POLICIES[policy].recent,
                                                          budget // 4), policy
        if policy == engine.DEFAULT_POLICY:
            assert node.params() == evaluated.params()
