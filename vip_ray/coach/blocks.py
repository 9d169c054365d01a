"""From a DAG to a chain of blocks, and the partitions ("cuts") of it (COACH §III-B, Fig. 4).

A *cut* is the set ``E`` of layers the end device runs: it contains the input and every
predecessor of each of its layers (downward closed). What crosses to the cloud are the outputs of
the layers of ``E`` that have a user outside ``E``.

*Chain boundaries* are the positions of the topological order after which exactly one tensor is
live (a single-tensor cut). The layers between two consecutive boundaries form a block; a block
of more than one layer holds parallel branches (a residual block, an inception module): COACH's
*virtual block*. Inside a virtual block each branch is a chain flow (its layers in topological
order); a cut inside the block takes a prefix of every branch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

from vip_ray.coach.profile import DagProfile


@dataclass(frozen=True)
class Block:
    """Layers ``(start, stop]`` between two chain boundaries. ``branches``: for a virtual block,
    the layers of each parallel flow (topological order), the merge layer ``stop`` excluded;
    an identity shortcut is an empty branch."""

    index: int
    start: int          # boundary layer before the block (its output enters the block)
    stop: int           # last layer of the block (its output is the next single live tensor)
    branches: tuple[tuple[int, ...], ...] = ()

    @property
    def virtual(self) -> bool:
        return self.stop - self.start > 1

    def inside_cuts(self) -> int:
        """Number of distinct cuts strictly inside the block (every branch prefix combination
        but "nothing of the block", which is the boundary before it)."""
        return prod(len(b) + 1 for b in self.branches) - 1 if self.virtual else 0


@dataclass(frozen=True, eq=False)
class Cut:
    """A partition: ``end`` (bool per layer) runs on the end device; ``tensors`` (layer indices,
    production order) cross the link; ``where`` says how it was built (for tables and logs)."""

    end: np.ndarray = field(repr=False)
    tensors: tuple[int, ...]
    where: str

    @property
    def key(self) -> bytes:
        return np.packbits(self.end).tobytes()

    @property
    def local(self) -> bool:
        """Everything on the end device (nothing crosses but nothing needs to)."""
        return bool(self.end.all())

    @property
    def n_end(self) -> int:
        return int(self.end.sum()) - 1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cut) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


class Chain:
    """The chain-of-blocks view of a :class:`DagProfile`."""

    def __init__(self, profile: DagProfile):
        self.profile = profile
        n = len(profile.layers)
        last_use = np.zeros(n, dtype=np.int64)
        for layer in profile.layers:
            for i in layer.inputs:
                last_use[i] = max(last_use[i], layer.index)
        last_use[n - 1] = n  # the output stays live to the end
        self.last_use = last_use
        # boundary after layer p: the live tensors are the layers <= p used after p
        live = np.zeros(n, dtype=np.int64)
        for i in range(n):
            if last_use[i] > i:
                live[i] += 1
                if last_use[i] < n:
                    live[last_use[i]] -= 1
        self.live = np.cumsum(live)
        self.boundaries = [p for p in range(n) if self.live[p] == 1 and last_use[p] > p]
        self.blocks = [self._block(k, a, b) for k, (a, b) in enumerate(zip(self.boundaries, self.boundaries[1:]))]
        edges = [(j, layer.index) for layer in profile.layers for j in layer.inputs]
        self._src = np.array([e[0] for e in edges], dtype=np.int64)
        self._dst = np.array([e[1] for e in edges], dtype=np.int64)

    def _block(self, k: int, a: int, b: int) -> Block:
        if b - a == 1:
            return Block(k, a, b)
        inner = list(range(a + 1, b))
        # branches: connected components of the block's inner layers (edges among them only)
        parent = {i: i for i in inner}

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in inner:
            for j in self.profile.layers[i].inputs:
                if j in parent:
                    parent[find(i)] = find(j)
        comps: dict[int, list[int]] = {}
        for i in inner:
            comps.setdefault(find(i), []).append(i)
        branches = [tuple(c) for c in sorted(comps.values(), key=lambda c: c[0])]
        # a flow straight from the entry into the merge (identity shortcut) is an empty branch
        if a in self.profile.layers[b].inputs:
            branches.append(())
        return Block(k, a, b, tuple(branches))

    # -- cuts ---------------------------------------------------------------------------------

    def n_layers(self) -> int:
        return len(self.profile.layers)

    def cut_from_end(self, end: np.ndarray, where: str) -> Cut:
        end = np.asarray(end, dtype=bool)
        if not end[0]:
            raise ValueError("a cut must keep the input on the end device")
        if end.shape != (self.n_layers(),):
            raise ValueError(f"a cut needs one flag per layer ({self.n_layers()}), got shape {end.shape}")
        src_end, dst_end = end[self._src], end[self._dst]
        bad = np.flatnonzero(dst_end & ~src_end)
        if len(bad):
            e = bad[0]
            raise ValueError(f"not a cut: layer {self.profile.layers[self._dst[e]].name} is on the end device "
                             f"but its input {self.profile.layers[self._src[e]].name} is not")
        tensors = np.unique(self._src[src_end & ~dst_end])  # sorted = production order
        return Cut(end, tuple(int(t) for t in tensors), where)

    def boundary_cut(self, p: int) -> Cut:
        """End device runs layers 0..p (p a chain boundary, or the output = all local)."""
        end = np.zeros(self.n_layers(), dtype=bool)
        end[: p + 1] = True
        if p == self.n_layers() - 1:
            return self.cut_from_end(end, "local (all end)")
        return self.cut_from_end(end, f"after {self.profile.layers[p].name}" if p else "input (all cloud)")

    def boundary_cuts(self) -> list[Cut]:
        """Every single-tensor cut plus the all-local one (the chain search space)."""
        cuts = [self.boundary_cut(p) for p in self.boundaries]
        if self.boundaries[-1] != self.n_layers() - 1:
            cuts.append(self.boundary_cut(self.n_layers() - 1))
        return cuts

    def inside_cut(self, block: Block, prefix: tuple[int, ...]) -> Cut:
        """A cut inside a virtual block: the first ``prefix[k]`` layers of branch k on the end."""
        if len(prefix) != len(block.branches):
            raise ValueError(f"block {block.index} has {len(block.branches)} branches, got {len(prefix)} prefix lengths")
        end = np.zeros(self.n_layers(), dtype=bool)
        end[: block.start + 1] = True
        for br, j in zip(block.branches, prefix):
            if not 0 <= j <= len(br):
                raise ValueError(f"prefix {j} out of range for a branch of {len(br)} layers")
            end[list(br[:j])] = True
        names = ",".join(self.profile.layers[br[j - 1]].name if j else "-" for br, j in zip(block.branches, prefix) if br)
        return self.cut_from_end(end, f"inside block {block.index} [{names}]")

    def all_cuts(self) -> list[Cut]:
        """The exhaustive space: every boundary cut and every branch-prefix combination inside
        every virtual block (its size is the O(c^n) of COACH §III-B)."""
        cuts = self.boundary_cuts()
        for block in self.blocks:
            if block.virtual:
                for prefix in np.ndindex(*[len(b) + 1 for b in block.branches]):
                    if any(prefix):
                        cuts.append(self.inside_cut(block, tuple(int(j) for j in prefix)))
        return cuts

    def exhaustive_size(self) -> int:
        return len(self.boundary_cuts()) + sum(b.inside_cuts() for b in self.blocks)
