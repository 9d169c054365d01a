"""Hydra composition of the training config, with errors a user can act on.

Hydra's own answers to a wrong key (``Could not override 'train.epochs'. To append to your
config use +train.epochs=...``) lead a user astray: the ``+`` form adds a key nothing reads.
Here a wrong key is answered with the keys its section has (and, for keys that live elsewhere,
where), and a ``+key`` the pool factory would ignore is refused the same way.
"""
from __future__ import annotations

from vip_ray.errors import UserError

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class ConfigCompositionError(UserError, ValueError):
    pass


#: Config groups (one option file each, ``group=option``); the root config's own sections follow.
GROUPS = ("data", "family", "shape", "diversity")
SECTIONS = ("pool", "train", "resources", "ray", "tune")

_PHASES_EXAMPLE = "family.phases=[{name:scratch,epochs:5,lr:3e-3,schedule:cosine}]"
#: Keys people reach for that live somewhere else, and where.
ELSEWHERE = {
    "epochs": f"epochs live under family.phases, e.g. {_PHASES_EXAMPLE} (the teacher's: train.teacher_epochs)",
    "lr": f"learning rates live under family.phases, e.g. {_PHASES_EXAMPLE} (the teacher's: train.teacher_lr)",
    "seed": "the seed is the top-level key seed (seed=1)",
    "cpu": "per-trial CPUs are resources.cpu", "gpu": "per-trial GPUs are resources.gpu",
    "address": "the Ray cluster is ray.address", "name": "the pool's name is pool.name",
}


def config_dir() -> Path:
    """The ``tune/`` config tree: $VIP_RAY_TUNE_CONFIG, ./tune, or the one beside the package."""
    candidates = [os.environ.get("VIP_RAY_TUNE_CONFIG"), Path.cwd() / "tune",
                  Path(__file__).resolve().parents[2] / "tune"]
    for c in candidates:
        if c and (Path(c) / "config.yaml").is_file():
            return Path(c).resolve()
    raise ConfigCompositionError(
        "cannot find the training config tree (tune/config.yaml); run from the vip_ray checkout "
        "or set VIP_RAY_TUNE_CONFIG to its tune/ folder"
    )


def _hydra_compose(cdir: Path, overrides: Sequence[str]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(cdir), version_base=None):
        cfg = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose ``tune/config.yaml`` with Hydra overrides into a resolved plain dict; refuse keys
    the pool factory does not read."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    cdir = config_dir()
    try:
        cfg = _hydra_compose(cdir, overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigCompositionError(_explain(str(e), cdir, overrides)) from None
    _check_known_keys(cfg, cdir, overrides)
    return cfg


def _where(key: str, section: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    hint = ELSEWHERE.get(leaf)
    if hint and not (leaf == "seed" and key == "seed") and not (leaf == "name" and section == "pool"):
        return f"{hint}; "
    return ""


def _section_keys(cdir: Path, overrides: Sequence[str], path: list[str]) -> list[str] | None:
    """The keys at ``path`` of the config the group choices compose to (None if not a mapping)."""
    choices = [o for o in overrides if "=" in o and "." not in o.partition("=")[0] and not o.startswith(("+", "~"))]
    try:
        node: Any = _hydra_compose(cdir, choices)
    except Exception:  # noqa: BLE001 - the choices themselves are broken; say what we can without them
        return None
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return list(node) if isinstance(node, dict) else None


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it (shorter error lines)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _explain(message: str, cdir: Path, overrides: Sequence[str]) -> str:
    """One line for Hydra's multi-line answers: the key (or group option), what is allowed."""
    root = _shown(cdir / "config.yaml")
    m = re.search(r"Could not override '([^']+)'", message)
    if m:
        key = m.group(1)
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        keys = _section_keys(cdir, overrides, parent.split(".") if parent else [])
        if keys is None and parent:  # the section itself is wrong: list the sections
            parent, keys = "the config", _section_keys(cdir, overrides, [])
        has = f"{parent or 'the config'} has: {', '.join(keys)}" if keys else "see tune/config.yaml"
        return f"{root}: {key}: no such key; {_where(key, parent)}{has}"
    m = re.search(r"Could not find '([^/']+)/([^']+)'", message)
    if m:
        group, option = m.groups()
        options = sorted(p.stem for p in (cdir / group).glob("*.yaml")) if (cdir / group).is_dir() else []
        return (f"{root}: {group}={option}: no such option; allowed (the files in {_shown(cdir / group)}): "
                f"{', '.join(options)}")
    first = message.strip().splitlines()[0] if message.strip() else message
    return f"{root}: {first}"


def _check_known_keys(cfg: dict[str, Any], cdir: Path, overrides: Sequence[str]) -> None:
    """Sections are mappings, and hold only the keys the root config defines (a ``+train.epochs``
    would be accepted by Hydra and ignored by the trainer)."""
    import yaml

    base = yaml.safe_load((cdir / "config.yaml").read_text()) or {}
    root = _shown(cdir / "config.yaml")
    unknown_top = [k for k in cfg if k not in base and k not in GROUPS and k != "defaults"]
    if unknown_top:
        key = unknown_top[0]
        allowed = [k for k in base if k != "defaults"] + list(GROUPS)
        raise ConfigCompositionError(f"{root}: {key}: no such key; {_where(key, '')}the config has: "
                                     f"{', '.join(allowed)}")
    for section in (*SECTIONS, *GROUPS):
        if section in cfg and not isinstance(cfg[section], dict):
            what = f"pick an option with {section}=NAME" if section in GROUPS else f"set its keys, e.g. {section}.KEY=VALUE"
            raise ConfigCompositionError(f"{root}: {section}: is a section, not a value ({cfg[section]!r}); {what}")
    for section in SECTIONS:
        known = base.get(section) or {}
        for key in cfg.get(section) or {}:
            if key not in known:
                full = f"{section}.{key}"
                raise ConfigCompositionError(f"{root}: {full}: no such key; {_where(full, section)}{section} has: "
                                             f"{', '.join(known)}")
