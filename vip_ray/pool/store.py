"""On-disk pool format and its validating reader.

``<root>/<name>/``::

    manifest.json          PoolManifest (schema_version, members, data fingerprint, checksums)
    bank.npz               labels (N,), test_indices (N,), logits (M, N, C) in manifest member order
    weights/<member>.pt    state_dict, loadable with torch.load(weights_only=True)

Bank rows are a member's logits over the C classes, except for a class-parallel group model
(role ``cp_group``, classes g in its record): it has |g| + 1 outputs z (g's classes in order,
then "other"), and its row n holds **log-probabilities** in the full class space::

    row[c] = log softmax(z)[position of c in g]          for c in g
    row[c] = log(softmax(z)[|g|] / (C − |g|))            for c not in g  (p_other spread evenly)

so ``softmax(row)`` is a proper distribution and argmax / accuracy read as for any member;
``vip_ray.class_groups.group_log_probs`` recovers the |g| + 1 log-probabilities.

A pool is written into a temporary sibling directory and renamed into place, so a
reader either sees a whole pool or none; the reader still checks every checksum and
shape, so a pool damaged afterwards is refused with the path and the reason.
"""
from __future__ import annotations

from vip_ray.errors import UserError

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vip_ray.core.results import atomic_directory

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
BANK_FILE = "bank.npz"
WEIGHTS_DIR = "weights"


class PoolError(UserError, RuntimeError):
    """A pool that is missing, partial, corrupt or does not match what was asked."""


class MemberRecord(BaseModel):
    """One trained model of the pool: a variant, a baseline, the teacher or a class-parallel group model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @model_validator(mode="before")
    @classmethod
    def _renamed_fields(cls, data: Any) -> Any:
        # manifests written before the field was named for what it is (VP eq. 1 reads ``width``)
        if isinstance(data, dict) and "depth_multiplier" in data and "last_conv_factor" not in data:
            data = {("last_conv_factor" if k == "depth_multiplier" else k): v for k, v in data.items()}
        return data

    id: str
    role: Literal["variant", "baseline", "teacher", "cp_group"]
    model: str                      # registry name (vip_ray.models)
    family: str
    segment: int | None
    input_size: int                 # ρ actually used
    nominal_input_size: int         # ρ of the paper's table
    width: float
    last_conv_factor: float         # VP: the last 1x1 conv has 64*j filters (manifests before v2: depth_multiplier)
    params: int
    macs: int
    bytes: int
    recipe: dict[str, Any]
    seed: int
    kd: bool
    cut: str
    build: dict[str, Any]           # kwargs for vip_ray.models.build_model (besides the name)
    classes: list[int] | None = None  # cp_group: the classes it owns (its outputs: these, then "other")
    accuracy: float                 # top-1 on the pool's test split (from the bank)
    top5: float
    train: dict[str, Any] = Field(default_factory=dict)  # epochs, seconds, images/s, pretrained, trial
    weights: str                    # relative path of the state_dict file


class PoolManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int
    name: str
    created: str
    family: str
    shape: str
    diversity: str
    data: dict[str, Any]            # name, num_classes, channels, class_names, n_test, fingerprint
    seed: int
    members: list[MemberRecord]
    config: dict[str, Any]          # resolved training config
    versions: dict[str, str]
    checksums: dict[str, str]       # relative path -> sha256

    def member(self, member_id: str) -> MemberRecord:
        for m in self.members:
            if m.id == member_id:
                return m
        raise PoolError(f"pool {self.name!r} has no member {member_id!r}; members: {', '.join(self.ids())}")

    def ids(self, role: str | None = None) -> list[str]:
        return [m.id for m in self.members if role is None or m.role == role]

# --- Where pools live -----------------------------------------------------------------------------
# Two places, searched in this order for a pool name:
#   1. the pool store, ``pools_root()``: pools trained on this machine (by ``python -m vip_ray.tune``,
#      on first use, or by ``vip-sim pools default --retrain``);
#   2. the reference pools shipped inside the package (``reference_root()``): read-only, checked
#      against ``SHA256SUMS`` on every load, identical on every machine.
# A store pool of the same name shadows the reference one (the user's own training wins), and the
# commands that open it say so.

HOME_ENV, POOLS_ENV = "VIP_RAY_HOME", "VIP_RAY_POOLS"
REFERENCE_DIR = "reference_pools"
REFERENCE_SUMS = "SHA256SUMS"


def _checkout() -> Path | None:
    """The source checkout this package runs from (a folder holding pyproject.toml beside
    ``vip_ray/``), or None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "vip_ray").is_dir() else None


def vip_ray_home() -> Path:
    """Where vip_ray keeps what it trains: ``$VIP_RAY_HOME``, else the checkout's ``results/``
    folder when running from a source checkout, else ``~/.vip_ray``. Never the current folder."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser().absolute()
    checkout = _checkout()
    return checkout / "results" if checkout else Path.home() / ".vip_ray"


def pools_root(root: str | os.PathLike | None = None) -> Path:
    """The pool store: ``root`` if given, else ``$VIP_RAY_POOLS``, else ``<vip_ray_home()>/pools``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(POOLS_ENV)
    if env:
        return Path(env).expanduser()
    return vip_ray_home() / "pools"


def reference_root() -> Path:
    """The reference pools shipped with the package (package data, found from any folder)."""
    return Path(__file__).resolve().parent / REFERENCE_DIR


def reference_pools() -> list[Path]:
    """The shipped reference pool directories."""
    base = reference_root()
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_pool(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """The directory of pool ``name``: in the store, else a shipped reference pool, else None."""
    for candidate in (pools_root(root) / name, reference_root() / name):
        if candidate.is_dir():
            return candidate
    return None


def _is_name(name_or_path: str | os.PathLike) -> bool:
    text = str(name_or_path)
    return bool(text) and "/" not in text and os.sep not in text and text not in (".", "..")


def is_reference(path: str | os.PathLike) -> bool:
    return Path(path).resolve().parent == reference_root()


def reference_sums() -> dict[str, str]:
    """``SHA256SUMS`` of the reference pools: path relative to ``reference_root()`` -> sha256
    (``sha256sum -c SHA256SUMS`` in that folder checks them too)."""
    f = reference_root() / REFERENCE_SUMS
    if not f.is_file():
        raise PoolError(f"{f}: missing; the reference pools cannot be verified (reinstall vip_ray or "
                        f"restore it with git checkout)")
    sums = {}
    for n, line in enumerate(f.read_text().splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            raise PoolError(f"{f}: line {n} is not '<sha256>  <path>'")
        sums[rel] = digest
    return sums


def write_reference_sums() -> Path:
    """Rewrite ``SHA256SUMS`` over every file of every reference pool (after rebuilding one)."""
    base = reference_root()
    lines = [f"{_sha256(p)}  {p.relative_to(base).as_posix()}"
             for pool in reference_pools() for p in sorted(pool.rglob("*")) if p.is_file()]
    out = base / REFERENCE_SUMS
    out.write_text("\n".join(lines) + "\n")
    return out


def verify_reference(path: str | os.PathLike) -> None:
    """Check a reference pool's files against the shipped ``SHA256SUMS`` (manifest included,
    which the manifest's own checksums cannot cover); one-line PoolError naming the file."""
    path = Path(path)
    base = reference_root()
    listed = {rel: d for rel, d in reference_sums().items() if rel.split("/", 1)[0] == path.name}
    if not listed:
        raise PoolError(f"{base / REFERENCE_SUMS}: lists no file of reference pool {path.name!r}")
    restore = (f"restore it (git checkout -- {base.name}/{path.name}, or reinstall vip_ray), or train a "
               f"local one with vip-sim pools {path.name} --retrain")
    for rel, digest in listed.items():
        f = base / rel
        if not f.is_file():
            raise PoolError(f"{f}: missing from the shipped reference pool {path.name!r}; {restore}")
        if _sha256(f) != digest:
            raise PoolError(f"{f}: does not match its checksum in {base / REFERENCE_SUMS} "
                            f"(corrupt or modified); {restore}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_pool(
    root: str | os.PathLike,
    manifest: dict[str, Any],
    weights: dict[str, dict[str, Any]],
    logits: dict[str, np.ndarray],
    labels: np.ndarray,
    test_indices: np.ndarray,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a pool atomically (temp dir + rename) and return its directory.

    ``manifest`` is everything of :class:`PoolManifest` but ``checksums`` and
    ``schema_version``; ``weights`` and ``logits`` are keyed by member id.
    """
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / manifest["name"]
    if final.exists() and not overwrite:
        raise PoolError(f"{final}: pool already exists (set pool.overwrite=true to replace it)")
    with atomic_directory(final, replace=overwrite, durable=True) as tmp:
        (tmp / WEIGHTS_DIR).mkdir()
        ids = [m["id"] for m in manifest["members"]]
        checksums = {}
        for mid in ids:
            rel = f"{WEIGHTS_DIR}/{mid}.pt"
            torch.save(weights[mid], tmp / rel)
            checksums[rel] = _sha256(tmp / rel)
        stacked = np.stack([np.asarray(logits[mid], dtype=np.float32) for mid in ids])
        np.savez(tmp / BANK_FILE, labels=np.asarray(labels, dtype=np.int64),
                 test_indices=np.asarray(test_indices, dtype=np.int64), logits=stacked)
        checksums[BANK_FILE] = _sha256(tmp / BANK_FILE)
        body = PoolManifest(schema_version=SCHEMA_VERSION, checksums=checksums, **manifest)
        (tmp / MANIFEST_FILE).write_text(body.model_dump_json(indent=2))
        Pool.load(tmp)  # never publish a pool our own reader would refuse
    return final


class Pool:
    """A validated pool: manifest, prediction bank and lazily loaded weights."""

    def __init__(self, path: Path, manifest: PoolManifest, bank: dict[str, np.ndarray]):
        self.path = path
        self.manifest = manifest
        self.labels: np.ndarray = bank["labels"]
        self.test_indices: np.ndarray = bank["test_indices"]
        self._logits: np.ndarray = bank["logits"]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def num_classes(self) -> int:
        return int(self.manifest.data["num_classes"])

    @property
    def members(self):
        return self.manifest.members

    @classmethod
    def open(cls, name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Pool:
        """Open by name — from the pool store, else from the shipped reference pools (verified
        against ``SHA256SUMS``) — or by path. A name is looked up first, so a folder of the same
        name in the current directory never decides which pool a command gets."""
        p = find_pool(str(name_or_path), root) if _is_name(name_or_path) else None
        if p is None:
            p = Path(name_or_path)
            if not p.is_dir():
                names = sorted({q.name for q in list_pools(root)} | {q.name for q in reference_pools()})
                raise PoolError(
                    f"no pool {str(name_or_path)!r} under {pools_root(root)} or among the reference pools; "
                    f"available: {', '.join(names) or '(none — train one with python -m vip_ray.tune)'}"
                )
        if is_reference(p):
            verify_reference(p)
        return cls.load(p)

    @property
    def bank_sha256(self) -> str:
        """sha256 of the prediction bank file: what a simulation's results depend on."""
        return self.manifest.checksums[BANK_FILE]

    @classmethod
    def load(cls, path: str | os.PathLike) -> Pool:
        path = Path(path)
        mpath = path / MANIFEST_FILE
        if not mpath.is_file():
            raise PoolError(f"{path}: not a pool or a partial one (no {MANIFEST_FILE})")
        try:
            raw = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PoolError(f"{mpath}: corrupt manifest ({e})") from None
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise PoolError(
                f"{mpath}: schema_version {raw.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})"
            )
        try:
            manifest = PoolManifest.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise PoolError(f"{mpath}: invalid manifest at {where}: {first['msg']}") from None
        for rel, digest in manifest.checksums.items():
            f = path / rel
            if not f.is_file():
                raise PoolError(f"{path}: partial pool, {rel} is missing")
            if _sha256(f) != digest:
                raise PoolError(f"{path}: {rel} does not match its checksum (corrupt or modified)")
        expected = {f"{WEIGHTS_DIR}/{m.id}.pt" for m in manifest.members} | {BANK_FILE}
        missing = expected - set(manifest.checksums)
        if missing:
            raise PoolError(f"{mpath}: no checksum for {', '.join(sorted(missing))}")
        try:
            with np.load(path / BANK_FILE) as z:
                bank = {k: z[k] for k in ("labels", "test_indices", "logits")}
        except (KeyError, ValueError, OSError) as e:
            raise PoolError(f"{path / BANK_FILE}: unreadable prediction bank ({e})") from None
        m, n, c = len(manifest.members), len(bank["labels"]), int(manifest.data["num_classes"])
        _check_class_groups(manifest, c, mpath)
        if bank["logits"].shape != (m, n, c):
            raise PoolError(
                f"{path / BANK_FILE}: logits shape {bank['logits'].shape} does not match "
                f"{m} members × {n} test samples × {c} classes"
            )
        if n != int(manifest.data["n_test"]):
            raise PoolError(f"{path}: bank has {n} test samples, manifest says {manifest.data['n_test']}")
        return cls(path, manifest, bank)

    def class_masks(self, member_ids: list[str] | None = None) -> np.ndarray:
        """(G, C) bool: which classes each cp_group member owns (default: every cp_group member,
        manifest order) — the ``classes=`` argument of ``vip_ray.core.aggregation.cp_aggregate``."""
        ids = self.manifest.ids("cp_group") if member_ids is None else member_ids
        out = np.zeros((len(ids), self.num_classes), dtype=bool)
        for i, mid in enumerate(ids):
            rec = self.manifest.member(mid)
            if rec.classes is None:
                raise PoolError(f"pool {self.name!r}: member {mid!r} ({rec.role}) owns no class group")
            out[i, rec.classes] = True
        return out

    def logits(self, member_ids: list[str] | None = None) -> np.ndarray:
        """(V, N, C) logits of the given members (default: all, manifest order)."""
        ids = self.manifest.ids() if member_ids is None else member_ids
        order = {mid: i for i, mid in enumerate(self.manifest.ids())}
        for mid in ids:
            if mid not in order:
                self.manifest.member(mid)  # raises with the list of members
        return self._logits[[order[mid] for mid in ids]]

    def state_dict(self, member_id: str) -> dict[str, Any]:
        import torch

        rec = self.manifest.member(member_id)
        return torch.load(self.path / rec.weights, map_location="cpu", weights_only=True)

    def build_model(self, member_id: str):
        """The member's trained network, ready for inference (eval mode)."""
        from vip_ray.models import build_model

        rec = self.manifest.member(member_id)
        model = build_model(rec.model, **rec.build, pretrained="never")
        model.load_state_dict(self.state_dict(member_id))
        return model.eval()


def _check_class_groups(manifest: PoolManifest, num_classes: int, mpath: Path) -> None:
    owned: set[int] = set()
    for rec in manifest.members:
        if rec.role != "cp_group" and rec.classes is None:
            continue
        where = f"{mpath}: member {rec.id!r}"
        if rec.role != "cp_group":
            raise PoolError(f"{where}: only cp_group members own classes (role {rec.role!r})")
        cls = rec.classes or []
        if not cls or len(set(cls)) != len(cls) or not all(0 <= x < num_classes for x in cls):
            raise PoolError(f"{where}: classes {rec.classes!r} must be distinct class indices in 0..{num_classes - 1}")
        if set(cls) & owned:
            raise PoolError(f"{where}: classes {sorted(set(cls) & owned)} are owned by another group too")
        owned |= set(cls)
        if rec.build.get("num_classes") != len(cls) + 1:
            raise PoolError(f"{where}: {len(cls)} classes need {len(cls) + 1} outputs, build says "
                            f"{rec.build.get('num_classes')}")


def list_pools(root: str | os.PathLike | None = None) -> list[Path]:
    """Pool directories under the store (hidden temp dirs excluded)."""
    base = pools_root(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
