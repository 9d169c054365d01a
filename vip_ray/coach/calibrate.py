"""The real model behind the end–cloud strategies: a trained pool member, split at a cut, with
the crossing tensors really quantized.

* :class:`SplitRunner` executes the traced graph of the member's classifier (backbone, pooling,
  head — the input adapter stays with the camera) in two halves: the end device's layers, then
  the cloud's, fed with ``fake_quantize``\\ d crossing tensors.
* :class:`EndCloudModel` holds the member, its cost profile (traced at the *nominal* input size,
  e.g. 224 px, for MACs and bytes) and its data: the pool's held-out split (the prediction
  bank's samples) divided into a stratified *calibration* part — COACH's calibration set D, for
  eq. 1's accuracy probes, the semantic centres and the online thresholds — and the disjoint
  *evaluation* part the simulated frames are drawn from. (The training split is not used for
  calibration: a model is more robust to quantization on the data it was fitted to, so bits
  chosen there fail on new frames.) Its accuracy oracle answers eq. 1 for the offline search;
  ``logits``/``features`` give per-sample outputs at any bits for the simulator, rows in bank
  order (calibration rows NaN). Everything is cached per (cut, bits), so the strategies of one
  comparison share the forward passes.
"""
from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn

from vip_ray.coach.blocks import Chain, Cut
from vip_ray.coach.profile import DagProfile, classifier_module, trace_dag
from vip_ray.coach.quant import FP32, fake_quantize

_INPLACE = {operator.iadd: operator.add, operator.imul: operator.mul}


class SplitRunner:
    """Runs a traced model's layers on either side of a cut (layers as in ``profile.layers``)."""

    def __init__(self, profile: DagProfile):
        self.profile = profile
        gm = profile.graph_module
        for m in gm.modules():  # a tensor that crosses may also feed an end-side ReLU: no in-place
            if isinstance(m, (nn.ReLU, nn.ReLU6)) and getattr(m, "inplace", False):
                m.inplace = False
        self.modules = dict(gm.named_modules())
        self.nodes = [n for n in gm.graph.nodes if n.op != "output"]
        if [n.name for n in self.nodes] != [layer.name for layer in profile.layers]:
            raise ValueError("profile and graph disagree on the layers")
        self.chain = Chain(profile)

    def _exec(self, i: int, env: dict[int, torch.Tensor]) -> torch.Tensor:
        node = self.nodes[i]
        index = {n: j for j, n in ((k, self.nodes[k]) for k in self.profile.layers[i].inputs)}
        args = fx.node.map_arg(node.args, lambda n: env[index[n]])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[index[n]])
        if node.op == "call_module":
            return self.modules[node.target](*args, **kwargs)
        if node.op == "call_function":
            return _INPLACE.get(node.target, node.target)(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        raise ValueError(f"cannot execute node {node.name!r} ({node.op})")

    def _run(self, layers: np.ndarray, env: dict[int, torch.Tensor], keep: set[int]) -> None:
        last = self.chain.last_use
        for i in layers:
            env[int(i)] = self._exec(int(i), env)
            for j in self.profile.layers[int(i)].inputs:   # free what nobody needs any more
                if last[j] <= i and j not in keep:
                    env.pop(j, None)

    @torch.no_grad()
    def end(self, cut: Cut, x: torch.Tensor) -> list[torch.Tensor]:
        """The crossing tensors (fp32), computed from a batch of (preprocessed) inputs."""
        env = {0: x}
        layers = np.flatnonzero(cut.end)[1:]
        self._run(layers, env, set(cut.tensors))
        if cut.local:
            return [env[self.profile.output]]
        return [env[t] for t in cut.tensors]

    @torch.no_grad()
    def cloud(self, cut: Cut, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Logits from the crossing tensors (already dequantized)."""
        if cut.local:
            return tensors[0]
        env = dict(zip(cut.tensors, tensors))
        self._run(np.flatnonzero(~cut.end), env, set())
        return env[self.profile.output]

    def logits(self, cut: Cut, x: torch.Tensor, bits: int | tuple[int, ...] = FP32) -> torch.Tensor:
        """End half, quantize every crossing tensor (the raw frame excepted), cloud half."""
        return self.cloud(cut, quantize_tensors(cut, self.end(cut, x), bits))


def quantize_tensors(cut: Cut, tensors: list[torch.Tensor], bits: int | tuple[int, ...]) -> list[torch.Tensor]:
    """``bits`` for every tensor, or one width per tensor; the raw frame (layer 0) goes as it is."""
    if cut.local:
        return tensors
    per = bits if isinstance(bits, tuple) else (bits,) * len(tensors)
    return [t if layer == 0 else fake_quantize(t, b) for layer, t, b in zip(cut.tensors, tensors, per)]


def gap(t: torch.Tensor) -> torch.Tensor:
    """Global average pooling (COACH §III-C): (B, C, H, W) → (B, C); (B, D) stays."""
    return t.mean(dim=(2, 3)) if t.ndim == 4 else t.reshape(len(t), -1)


@dataclass
class Split:
    """Preprocessed inputs and labels of one part of the held-out split; ``index``: bank rows."""

    x: torch.Tensor
    y: np.ndarray
    index: np.ndarray


class EndCloudModel:
    """A trained pool member ready for end–cloud partitioning (see the module docstring)."""

    def __init__(self, pool: Any, member_id: str, *, profile_size: int | None = None,
                 calibration_samples: int = 400, seed: int = 0, batch_size: int = 250,
                 input_bytes: int | None = None, log: Callable[[str], None] | None = None):
        from vip_ray.data import load_dataset

        self.pool = pool
        self.member = pool.manifest.member(member_id)
        self.log = log or (lambda s: None)
        net = pool.build_model(member_id)
        self.num_classes = pool.num_classes
        size = int(profile_size or self.member.nominal_input_size)
        self.profile = trace_dag(classifier_module(net), (3, size, size), name=self.member.model,
                                 input_bytes=input_bytes or 3 * size * size)
        self.runner = SplitRunner(self.profile)
        self.chain = self.runner.chain
        self.batch_size = batch_size
        data = load_dataset(pool.manifest.config["data"])
        if data.fingerprint() != pool.manifest.data.get("fingerprint"):
            raise ValueError(f"pool {pool.name!r}: its data set no longer matches the prediction bank "
                             f"(fingerprint {data.fingerprint()} != {pool.manifest.data.get('fingerprint')})")
        adapter = net.adapter.eval()
        labels = data.test_y.numpy()
        if not np.array_equal(labels, pool.labels):
            raise ValueError(f"pool {pool.name!r}: test labels differ from the bank's")
        if not 2 * len(np.unique(labels)) <= calibration_samples <= len(labels) // 2:
            raise ValueError(f"calibration_samples must be in [{2 * len(np.unique(labels))}, {len(labels) // 2}] "
                             f"(at most half of the pool's {len(labels)} held-out samples), got {calibration_samples}")
        cal = _stratified(labels, calibration_samples, seed)
        rest = np.setdiff1d(np.arange(len(labels)), cal)

        def prep(images: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([adapter(images[i:i + 500].float() / 255.0) for i in range(0, len(images), 500)])

        self.calibration = Split(prep(data.test_x[cal]), labels[cal], cal)
        self.evaluation = Split(prep(data.test_x[rest]), labels[rest], rest)
        self.n_bank = len(labels)
        self._logits: dict[tuple, np.ndarray] = {}
        self._ends: dict[tuple, list[torch.Tensor]] = {}
        self._feats: dict[tuple, np.ndarray] = {}
        self.forward_s = 0.0
        self.passes = 0

    def __getstate__(self) -> dict:
        """Without the logger (a console's lock does not pickle): the model travels to the live
        engine's end and cloud replicas, which log nothing through it."""
        return {**self.__dict__, "log": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.log = lambda s: None

    # -- forward passes, cached -----------------------------------------------------------------

    def _end(self, cut: Cut, split: str) -> list[torch.Tensor]:
        key = (cut.key, split)
        got = self._ends.get(key)
        if got is None:
            data = self._split(split)
            t0 = time.perf_counter()
            parts = [self.runner.end(cut, data.x[i:i + self.batch_size]) for i in range(0, len(data.x), self.batch_size)]
            got = [torch.cat([p[k] for p in parts]) for k in range(len(parts[0]))]
            self.forward_s += time.perf_counter() - t0
            if len(self._ends) >= 4:                  # crossing activations are large: keep a few
                self._ends.pop(next(iter(self._ends)))
            self._ends[key] = got
        return got

    def logits(self, cut: Cut, bits: int | tuple[int, ...], split: str = "evaluation") -> np.ndarray:
        """(N, C) logits of ``split``'s samples with the cut's tensors quantized to ``bits``."""
        per = bits if isinstance(bits, tuple) else (bits,) * max(1, len(cut.tensors))
        key = (cut.key, per, split)
        got = self._logits.get(key)
        if got is None:
            tensors = self._end(cut, split)
            t0 = time.perf_counter()
            out = []
            for i in range(0, len(tensors[0]), self.batch_size):
                chunk = [t[i:i + self.batch_size] for t in tensors]
                out.append(self.runner.cloud(cut, quantize_tensors(cut, chunk, per)))
            got = torch.cat(out).float().numpy()
            self.forward_s += time.perf_counter() - t0
            self.passes += 1
            self._logits[key] = got
        return got

    def features(self, cut: Cut, split: str = "evaluation") -> np.ndarray:
        """(N, D) GAP task features of the last crossing tensor (COACH's F; fp32 on the end)."""
        key = (cut.key, split)
        if key not in self._feats:          # small: kept for every cut, unlike the activations
            self._feats[key] = gap(self._end(cut, split)[-1]).float().numpy()
        return self._feats[key]

    def accuracy(self, cut: Cut, bits: int | tuple[int, ...], split: str = "calibration") -> float:
        y = self._split(split).y
        return float((self.logits(cut, bits, split).argmax(1) == y).mean())

    def _split(self, split: str) -> Split:
        if split not in ("calibration", "evaluation"):
            raise ValueError(f"split must be 'calibration' or 'evaluation', got {split!r}")
        return self.calibration if split == "calibration" else self.evaluation

    def bank_rows(self, values: np.ndarray, split: str = "evaluation") -> np.ndarray:
        """``values`` (rows of ``split``) placed at their bank rows; the other rows NaN."""
        out = np.full((self.n_bank, *values.shape[1:]), np.nan, dtype=np.float64)
        out[self._split(split).index] = values
        return out

    def oracle(self) -> "CalibrationOracle":
        return CalibrationOracle(self)

    def full_cut(self) -> Cut:
        return self.chain.boundary_cut(self.chain.n_layers() - 1)


class CalibrationOracle:
    """Eq. 1's accuracy on the calibration set: ``reference`` unquantized, ``(cut, bits)`` with the
    cut's crossing tensors quantized (all but the last at the same width)."""

    def __init__(self, model: EndCloudModel):
        self.model = model
        self.reference = model.accuracy(model.full_cut(), FP32)

    def __call__(self, cut: Cut, bits: int) -> float:
        return self.model.accuracy(cut, bits)


def _stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` positions with every class in proportion (seeded), sorted."""
    rng = np.random.default_rng(seed)
    n = min(n, len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    take = np.floor(counts / counts.sum() * n).astype(int)
    take[: n - take.sum()] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picks))
