"""Online controllers at the master: which devices it waits for, when it answers, where variants run.

A policy sees only what a real master sees — replies and their times, timeouts, missed
heartbeats (:class:`vip_ray.core.master.Knowledge`) — except ``oracle``, which knows the
availability changes scheduled in advance and is an upper bound (simulator only).

Policies are registered in one place, here (one file each; lazy entries, so listing them
imports nothing heavy); the scenario key ``control: {policy: NAME, ...}`` picks one and its
options are validated by :mod:`vip_ray.scenario.schema.control`::

    static    today's master (the default): wait for every placed device not known down
    anytime   static + the margin rule: answer as soon as the missing replies cannot change it
    oracle    re-place variants at the scheduled availability changes (knows the future; sim only)
    reactive  health + latency EWMA: stop waiting for a device after missed timeouts, wait
              again once it answers (redeploy: true also copies its variant elsewhere)
    bandit    UCB1 over each worker's variants, per epoch (re-deployments cost transfer + load; sim only)
    learned   wait for the devices a policy trained in vip_ray.control.env learned to (file: JSON;
              vip_ray.control.learned.register_learned registers one under its own name)

static, anytime and reactive (without redeploy) run live on the Serve engine too, the same
objects fed one request at a time (:mod:`vip_ray.control.live`).

Every policy also takes ``anytime: true`` (the margin rule on top of it) and ``adaptive_k: true``
(each device's top-k from its measured up-link bandwidth, :mod:`vip_ray.control.topk`; in the
simulator and live). Add one with
``@register_policy("name")`` on a :class:`vip_ray.control.base.Policy` subclass.
"""
from __future__ import annotations

from vip_ray.core.registry import Registry

#: every controller policy by name (``vip-sim policies``, ``vip-sim names policies``)
POLICIES: Registry = Registry("policy")
for _name, _target in (("static", "vip_ray.control.static:Static"),
                       ("anytime", "vip_ray.control.anytime:Anytime"),
                       ("oracle", "vip_ray.control.oracle:Oracle"),
                       ("reactive", "vip_ray.control.reactive:Reactive"),
                       ("bandit", "vip_ray.control.bandit:Bandit"),
                       ("learned", "vip_ray.control.learned:Learned")):
    POLICIES.register(_name, _target)


def register_policy(name: str):
    """Class decorator: ``@register_policy("mine") class Mine(Policy): ...``."""
    return POLICIES.register(name)


def controller(options, aggregation=None):
    """The policy object for a scenario's validated ``control`` options (``None`` for ``static``
    without ``anytime``: the master runs exactly as before, bit for bit)."""
    if _plain(options):
        return None
    return POLICIES.get(options.policy)(options, aggregation)


def _plain(options) -> bool:
    """``static`` with no option on: today's master."""
    return options is None or (options.policy == "static" and not options.anytime
                               and not getattr(options, "adaptive_k", False))


__all__ = ["POLICIES", "controller", "register_policy"]


def check_control(options, *, file: str, family: str, fanout: bool, aggregator: str | None,
                  multi_master: bool) -> str | None:
    """The one line refusing ``options`` for this run (before anything starts), or ``None``."""
    if _plain(options):
        return None
    policy = POLICIES.get(options.policy)
    name = options.policy
    if not policy.master_visible and family != "sim":
        return (f"{file}: control.policy: {name!r} needs what a real master cannot know (the availability "
                f"changes scheduled in advance); it runs in the simulator only, not live on {family}")
    if family not in policy.engines:
        return f"{file}: control.policy: {name!r} runs on the {' and '.join(policy.engines)} engine only, not {family}"
    if family != "sim" and getattr(options, "redeploy", False):
        return (f"{file}: control.redeploy: re-deployments run in the simulator only; live on {family}, "
                f"{name!r} runs with redeploy: false")
    if not fanout:
        return f"{file}: control.policy: {name!r} controls a fan-out master (strategies single, cp, vp, vip)"
    if multi_master:
        if name == "static":   # static with an option on (anytime, adaptive_k)
            on = [k for k in ("anytime", "adaptive_k") if getattr(options, k, False)]
            return (f"{file}: control.{on[0]}: runs with one master; a scenario with masters runs control.policy "
                    f"'static' without {' or '.join(on)}")
        return f"{file}: control.policy: {name!r} runs one master; a scenario with masters runs control.policy 'static'"
    if getattr(options, "adaptive_k", False) and aggregator != "vp":
        return (f"{file}: control.adaptive_k: picks the top-k of VP's compressed replies (strategy.aggregator "
                f"'vp'); strategy.aggregator is {aggregator!r}")
    if options.anytime or name == "anytime":
        from vip_ray.control.margin import ANYTIME_AGGREGATORS

        if aggregator not in ANYTIME_AGGREGATORS:
            return (f"{file}: control.anytime: the margin rule knows the aggregators "
                    f"{', '.join(ANYTIME_AGGREGATORS)}; strategy.aggregator is {aggregator!r}")
    return None
