"""sj_qvm.graph: which traced nodes are ReLUs, fresh module names; the core takes its graph
helpers from there and nothing private from the interop wing."""
import ast
import importlib
import pathlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sj_qvm
from sj_qvm import QuantReLU
from sj_qvm.graph import is_relu, trace, unique_name

CORE = pathlib.Path(sj_qvm.__file__).parent


class AllSpellings(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU()
        self.q = QuantReLU(4)

    def forward(self, x):
        x = self.relu(self.fc(x))
        x = F.relu(x) + torch.relu(x) + x.relu() + torch.relu_(x.clone()) + x.clone().relu_()
        x = torch.sigmoid(x) + x.clamp(min=0) + F.leaky_relu(x)
        return self.q(x)


def test_is_relu_knows_every_spelling_and_nothing_else():
    gm = trace(AllSpellings())
    modules = dict(gm.named_modules())
    relus = [n for n in gm.graph.nodes if is_relu(n, modules)]
    names = [n.target if n.op == "call_module" else getattr(n.target, "__name__", n.target)
             for n in relus]
    assert names == ["relu", "relu", "relu", "relu", "relu_", "relu_"]
    assert [n.op for n in relus] == ["call_module", "call_function", "call_function",
                                     "call_method", "call_function", "call_method"]
    # QuantReLU, clamp, sigmoid and leaky_relu are not plain ReLUs
    others = {n.target for n in gm.graph.nodes if n not in relus}
    assert {"q", "clamp", torch.sigmoid, F.leaky_relu} <= others


def test_unique_name_avoids_modules_and_attributes():
    m = nn.Module()
    m.act = nn.ReLU()
    m.act_1 = nn.ReLU()
    m.free = 3
    assert unique_name(m, "fresh") == "fresh"
    assert unique_name(m, "act") == "act_2"
    assert unique_name(m, "free") == "free_1"


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module or "", [a.name for a in node.names]


@pytest.mark.parametrize("name", ["analysis", "levels", "report", "plots", "accuracy", "convert",
                                  "graph", "mapping"])
def test_core_imports_nothing_from_interop(name):
    for level, module, names in _imports(CORE / f"{name}.py"):
        assert "interop" not in module, f"{name}.py imports from {module}"
        if level == 1 and module != "_compat":
            assert not [n for n in names if n.startswith("_") and n != "_compat"], \
                f"{name}.py imports private names {names} from .{module}"


def test_interop_mapping_is_the_core_mapping():
    from sj_qvm import interop, mapping
    assert interop.mapping is mapping
    assert importlib.import_module("sj_qvm.interop.mapping") is mapping
    assert interop.to_qvm is mapping.to_qvm and interop.MAPPING is mapping.MAPPING
