"""Multi-master scenarios (issue 17.2): several masters (users), each multicasting its own
workload to the devices of its neighbourhood it reaches; ``masters.neighbourhoods`` scales a city."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from vip_ray.scenario.schema.base import PositiveFloat, PositiveInt, _custom, _Model


class User(_Model):
    """A master (a user) of a multi-master scenario.

    * ``name`` — default ``user<i>``; ``count`` N > 1 gives users ``name-0`` … ``name-(N-1)``.
    * ``reaches`` — the devices its requests are multicast to: device names or group names
      (a group reaches every device expanded from it), of its neighbourhood.
    * ``rate_hz`` — its own Poisson rate (default: the workload's arrival process and rate;
      ``workload``'s length, deadline, input size and fallback hold for every user).
    """

    name: str | None = None
    count: PositiveInt = 1
    reaches: Annotated[list[str], Field(min_length=1)]
    rate_hz: PositiveFloat | None = None


class Masters(_Model):
    """``masters:`` — the scenario has several masters (users) instead of one master device.

    * ``neighbourhoods`` — the ``devices`` list and the ``users`` form one neighbourhood; N > 1
      repeats it N times (devices and users ``n<k>.<name>``, k = 0 … N−1). The one key that
      scales a city (``--set masters.neighbourhoods=1000``).
    * ``users`` — list of :class:`User` (≥ 1), each reaching devices of its own neighbourhood.

    No device has role ``master`` (the users aggregate and run no variant, so ``fallback: local``
    has nothing to fall back on); every device is a networked worker. After validation the
    neighbourhoods are expanded (``neighbourhoods`` 1, users one by one with full device names).
    """

    neighbourhoods: PositiveInt = 1
    users: Annotated[list[User], Field(min_length=1)]

    def expand(self, devices: list, complete_link) -> list:
        """Devices of every neighbourhood; fills the expanded users in. ``devices`` are one
        neighbourhood's, already expanded by ``count`` (their links not yet completed)."""
        for i, d in enumerate(devices):
            if d.role == "master":
                raise _custom("master_in_city", f"device {d.name!r} has role master; with masters: the users are "
                                                f"the masters and every device is a worker", sub=f"devices[{i}].role")
        for d in devices:
            d.role = "worker"
            d.link = complete_link(d.link)
        names = {d.name for d in devices}
        groups: dict[str, list[str]] = {}
        for d in devices:
            groups.setdefault(d.group or d.name, []).append(d.name)
        template: list[tuple[str, list[str], float | None]] = []
        seen: set[str] = set()
        for i, u in enumerate(self.users):
            base = u.name or f"user{i}"
            reach: list[str] = []
            for j, r in enumerate(u.reaches):
                hit = [r] if r in names else groups.get(r)
                if not hit:
                    raise _custom("unknown_device", f"no device or group {r!r} in the neighbourhood; devices: "
                                                    f"{', '.join(sorted(names)[:12])}{' ...' if len(names) > 12 else ''}",
                                  sub=f"masters.users[{i}].reaches[{j}]")
                reach += [h for h in hit if h not in reach]
            for name in ([base] if u.count == 1 else [f"{base}-{k}" for k in range(u.count)]):
                if name in seen or name in names:
                    what = "another user's" if name in seen else "a device's"
                    raise _custom("duplicate_name", f"user name {name!r} is also {what} name; "
                                                    f"give each user a distinct name", sub=f"masters.users[{i}].name")
                seen.add(name)
                template.append((name, reach, u.rate_hz))
        order = {d.name: k for k, d in enumerate(devices)}
        n = self.neighbourhoods
        out, users = [], []
        for k in range(n):
            pre = f"n{k}." if n > 1 else ""
            for d in devices:
                out.append(d if n == 1 else d.model_copy(update={"name": pre + d.name, "group": d.group or d.name}))
            for name, reach, rate in template:
                users.append(User(name=pre + name, reaches=[pre + r for r in sorted(reach, key=order.get)],
                                  rate_hz=rate))
        self.neighbourhoods, self.users = 1, users
        return out
