"""Resumable runs of a traced graph: execute nodes ``[start, end)`` of an ``fx.GraphModule`` on a
saved environment, and save the live values at a cut so that a later run resumes there.

Layer-by-layer calibration makes one pass per QuantReLU, each stopping at its layer; pass k+1
would recompute everything up to layer k again. With the values that cross cut k saved for every
batch, pass k+1 starts at cut k and computes only the segment between the two layers, so a
calibration costs about two forward passes instead of one per layer.

The saved values are the same tensors the full pass computes, and every node runs the same
module on them, so a resumed run gives bit-identical results.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.fx as fx

__all__ = ["GraphRunner", "live_bytes"]


def live_bytes(env: Dict[fx.Node, object]) -> int:
    """Bytes held by the tensors of a saved environment (inside tuples, lists, dicts too)."""
    def size(v) -> int:
        if isinstance(v, torch.Tensor):
            return v.numel() * v.element_size()
        if isinstance(v, (tuple, list)):
            return sum(size(u) for u in v)
        if isinstance(v, dict):
            return sum(size(u) for u in v.values())
        return 0
    return sum(size(v) for v in env.values())


class GraphRunner:
    """Runs segments of ``gm``'s graph (one placeholder) node by node."""

    def __init__(self, gm: fx.GraphModule):
        self.nodes = list(gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ValueError(f"GraphRunner needs a graph with one input, this one has "
                             f"{len(placeholders)}")
        self.placeholder = placeholders[0]
        self.last_use: Dict[fx.Node, int] = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                self.last_use[a] = i
        self.interp = fx.Interpreter(gm, garbage_collect_values=False)

    def site(self, target: str) -> int:
        """Index of the first ``call_module`` node of ``target``."""
        return next(i for i, n in enumerate(self.nodes)
                    if n.op == "call_module" and n.target == target)

    def start_env(self, x: torch.Tensor) -> Dict[fx.Node, object]:
        return {self.placeholder: x}

    def run(self, env: Dict[fx.Node, object], start: int, end: int,
            save_at: Optional[int] = None):
        """Execute nodes ``[start, end)`` on ``env`` (the values live at ``start``).

        Returns ``(saved, output)``: ``saved`` the values live at node ``save_at`` (in
        ``[start, end)``, else None), ``output`` the graph's output if the output node ran.
        """
        env = dict(env)
        saved, output = None, None
        self.interp.env = env
        for i in range(start, end):
            if i == save_at:
                saved = {n: v for n, v in env.items() if self.last_use.get(n, -1) >= i}
            n = self.nodes[i]
            if n.op == "placeholder":
                continue
            if n.op == "output":
                output = fx.node.map_arg(n.args[0], lambda a: env[a])
                continue
            env[n] = self.interp.run_node(n)
            for a in n.all_input_nodes:
                if self.last_use[a] == i:
                    env.pop(a, None)
        self.interp.env = {}
        return saved, output
