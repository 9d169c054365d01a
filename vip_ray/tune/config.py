"""Hydra composition of the training config, with errors a user can act on."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence


class ConfigCompositionError(ValueError):
    pass


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


def compose(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Compose ``tune/config.yaml`` with Hydra overrides into a resolved plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cdir = config_dir()
    try:
        with initialize_config_dir(config_dir=str(cdir), version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigCompositionError(f"{cdir}: {e}") from None
