"""DAG profile of a real torch model (COACH Algorithm 1, line 2: "evaluate layer computation and
transmission costs").

The model is traced with ``torch.fx``; every graph node that computes (conv, BN, ReLU, add, pool,
flatten, linear, ...) is a *layer* with its dependencies, its output shape at the profiling
resolution, its multiply-accumulates and its other elementwise work. Per-layer times on a device
come from the device catalog: ``(MACs + ops) / speed`` (the catalog's effective MAC/s for the
model family), or, when the device has a measured ``latency_ms`` for the model, that latency split
over the layers in proportion to their work.

Layer 0 is the input frame (what the camera hands over: uint8 C×H×W bytes); the last layer is the
model output (logits).
"""
from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from vip_ray.coach.quant import FP32, wire_bytes

#: torchvision architectures COACH's paper uses (and neighbours), buildable without weights
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg16", "vgg16_bn",
                      "vgg19", "mobilenet_v2", "googlenet")


@dataclass(frozen=True)
class Layer:
    """One computing node of the traced graph (index = position in topological order)."""

    index: int
    name: str           # fx node name
    target: str         # module path or function name
    kind: str           # input | conv | linear | bn | relu | add | pool | flatten | cat | other
    inputs: tuple[int, ...]
    shape: tuple[int, ...]  # output shape without the batch axis, at the profiling resolution
    macs: int
    ops: int            # elementwise work that is not a MAC (BN, ReLU, add, pooling), counted 1 per op

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class DagProfile:
    """A traced model: its layers (topological order), users and the module that runs it."""

    model: str
    input_shape: tuple[int, int, int]       # (C, H, W) the costs are profiled at
    layers: list[Layer]
    graph_module: fx.GraphModule = field(repr=False)
    input_bytes: int = 0                    # the raw frame on the wire (uint8)

    def __post_init__(self) -> None:
        users: list[list[int]] = [[] for _ in self.layers]
        for layer in self.layers:
            for i in layer.inputs:
                users[i].append(layer.index)
        self.users = [tuple(u) for u in users]
        if not self.input_bytes:
            self.input_bytes = int(np.prod(self.input_shape))

    @property
    def n(self) -> int:
        """Computing layers (the input excluded)."""
        return len(self.layers) - 1

    @property
    def output(self) -> int:
        return len(self.layers) - 1

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def work(self) -> np.ndarray:
        """MAC-equivalents per layer (MACs + elementwise ops)."""
        return np.array([layer.macs + layer.ops for layer in self.layers], dtype=np.float64)

    def tensor_bytes(self, index: int, bits: int = FP32) -> int:
        """Bytes of layer ``index``'s output on the wire at ``bits`` (the input: the raw frame)."""
        if index == 0:
            return self.input_bytes
        return wire_bytes(self.layers[index].numel, bits)

    def layer_times(self, device: Any, *, family: str | None = None, model_key: str | None = None) -> np.ndarray:
        """Seconds per layer on ``device`` (a scenario ``DeviceSpec``); layer 0 (input) costs 0.

        A measured ``latency_ms[model_key]`` on the device wins and is split by work share;
        otherwise ``overhead_ms`` (per inference, spread by work share) + work / ``speed(family)``.
        """
        work = self.work()
        work[0] = 0.0
        share = work / work.sum()
        table = getattr(device, "latency_ms", None) or {}
        if model_key is not None and model_key in table:
            return share * float(table[model_key]) / 1e3
        speed = device.speed(family)
        if speed is None:
            raise ValueError(f"device {device.name!r} has no macs_per_s{' for family ' + repr(family) if family else ''} "
                             f"and no latency_ms entry for {model_key!r}: cannot time {self.model}'s layers")
        return work / float(speed) + share * float(getattr(device, "overhead_ms", 0.0) or 0.0) / 1e3


# ---------------------------------------------------------------------------------------------
# Tracing
# ---------------------------------------------------------------------------------------------

_ADD_FUNCS = (operator.add, operator.iadd, torch.add)
_RELU_FUNCS = (torch.relu, nn.functional.relu)
_FLATTEN = (torch.flatten, "flatten", "view", "reshape")


def _kind_and_cost(node: fx.Node, mod: nn.Module | None, out: tuple[int, ...], in_shapes: list[tuple[int, ...]]):
    numel = int(np.prod(out)) if out else 1
    if node.op == "call_module":
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            return "conv", numel * (mod.in_channels // mod.groups) * k, 0
        if isinstance(mod, nn.Linear):
            return "linear", numel * mod.in_features, 0
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            return "bn", 0, 2 * numel
        if isinstance(mod, (nn.ReLU, nn.ReLU6)):
            return "relu", 0, numel
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            ks = mod.kernel_size if isinstance(mod.kernel_size, tuple) else (mod.kernel_size, mod.kernel_size)
            return "pool", 0, numel * ks[0] * ks[1]
        if isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return "pool", 0, int(np.prod(in_shapes[0])) if in_shapes else numel
        if isinstance(mod, (nn.Flatten, nn.Identity)):
            return "flatten", 0, 0
        if isinstance(mod, nn.Dropout):
            return "other", 0, 0
        return "other", 0, numel
    target = node.target
    if target in _ADD_FUNCS:
        return "add", 0, numel
    if target in _RELU_FUNCS:
        return "relu", 0, numel
    if target in _FLATTEN:
        return "flatten", 0, 0
    if target is torch.cat:
        return "cat", 0, 0
    return "other", 0, numel


def _target_name(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    return getattr(node.target, "__name__", str(node.target))


def _deps(node: fx.Node) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: out.append(n) or n)
    return out


def trace_dag(module: nn.Module, input_shape: tuple[int, int, int], *, name: str = "model",
              input_bytes: int | None = None) -> DagProfile:
    """Trace ``module`` (eval mode) and profile it on one (1, C, H, W) input.

    ``input_bytes``: the raw frame on the wire (default C·H·W, a uint8 image).
    """
    module = module.eval()
    gm = fx.symbolic_trace(module)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"{name}: expected a single-input model, the traced graph has {len(placeholders)} inputs")
    # shapes from a weightless copy on the meta device: no arithmetic, so profiling ResNet-101
    # at 224 px costs milliseconds, not a forward pass
    meta_gm = copy.deepcopy(gm).to("meta")
    with torch.no_grad():
        ShapeProp(meta_gm).propagate(torch.empty(1, *input_shape, device="meta"))
    shapes = {n.name: n.meta.get("tensor_meta") for n in meta_gm.graph.nodes}
    index: dict[fx.Node, int] = {}
    layers: list[Layer] = []
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        if node.op == "get_attr":
            raise ValueError(f"{name}: graph reads parameter {node.target!r} directly; only module calls are supported")
        meta = shapes.get(node.name)
        if meta is None or not hasattr(meta, "shape"):
            raise ValueError(f"{name}: node {node.name!r} does not produce one tensor (unsupported for partitioning)")
        shape = tuple(int(s) for s in meta.shape[1:])
        deps = [index[d] for d in _deps(node)]
        if node.op == "placeholder":
            kind, macs, ops = "input", 0, 0
        else:
            in_shapes = [layers[d].shape for d in deps]
            kind, macs, ops = _kind_and_cost(node, modules.get(node.target) if node.op == "call_module" else None,
                                             shape, in_shapes)
        index[node] = len(layers)
        layers.append(Layer(len(layers), node.name, _target_name(node), kind, tuple(deps), shape, int(macs), int(ops)))
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    last = _deps(outputs[0])
    if len(last) != 1 or index[last[0]] != len(layers) - 1:
        raise ValueError(f"{name}: the model output must be the last computed node")
    return DagProfile(name, tuple(input_shape), layers, gm, int(input_bytes or np.prod(input_shape)))


def classifier_module(net: nn.Module) -> nn.Module:
    """The part of a model the partitioner sees: for a pool ``VariantNet`` its backbone, pool and
    head (the input adapter — grey→RGB, crop, resize, normalise — stays with the camera);
    any other module as it is."""
    if all(hasattr(net, a) for a in ("adapter", "backbone", "pool", "head")):
        return nn.Sequential(OrderedDict(backbone=net.backbone, pool=net.pool, head=net.head)).eval()
    return net.eval()


def torchvision_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A torchvision architecture with random weights (for cost profiles only: no download)."""
    import torchvision

    if name not in TORCHVISION_MODELS:
        raise ValueError(f"unknown architecture {name!r}; allowed: {', '.join(TORCHVISION_MODELS)}")
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=False)
    with torch.device("meta"):  # weights are never needed for a cost profile
        return getattr(torchvision.models, name)(**kwargs).eval()


def profile_torchvision(name: str, input_size: int = 224, num_classes: int = 1000) -> DagProfile:
    """Profile of a torchvision architecture at ``input_size`` (e.g. ResNet-101 at 224 px)."""
    return trace_dag(torchvision_model(name, num_classes), (3, input_size, input_size), name=name)


Progress = Callable[[str], None]
