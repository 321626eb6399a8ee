"""sj_qvm.export.check_dynapcnn: one line per broken DYNAP-CNN constraint; with quantize_weights
an integer network that keeps them and its exact ANN twin (the spike equality part runs where
sinabs is installed)."""
import sys

import pytest
import torch
import torch.nn as nn

from nets import build
from sj_qvm import QuantReLU, convert
from sj_qvm.analysis import conversion_report
from sj_qvm.export import check_dynapcnn


def kinds(problems):
    return {p.split(":")[0] for p in problems}


def test_every_broken_constraint_is_named_once_per_layer():
    ann, x = build("cnn", 4, "ceil", threshold=0.7)
    problems = check_dynapcnn(convert(ann), (3, 8, 8)).problems
    assert kinds(problems) == {"integer weights", "threshold range", "initial state",
                               "firing rule", "current", "readout", "input"}
    assert sum(p.startswith("integer weights") for p in problems) == 3  # conv, conv, linear
    assert sum(p.startswith("firing rule") for p in problems) == 2
    assert all("\n" not in p for p in problems)


def test_layer_count_pooling_kind_kernel_and_input_size():
    layers = []
    for _ in range(10):
        layers += [nn.Linear(4, 4), QuantReLU(2, "floor", 1.0)]
    deep = nn.Sequential(*layers).eval()
    problems = check_dynapcnn(convert(deep, current="instant"), (4,)).problems
    assert any(p.startswith("layer count: 10 spiking layers") for p in problems)
    assert any(p.startswith("input size: (4,)") for p in problems)
    odd = nn.Sequential(nn.Conv2d(2, 4, (1, 3)), QuantReLU(2, "floor", 1.0), nn.AvgPool2d(8),
                        nn.Flatten(), nn.Linear(4 * 25 * 25, 2)).eval()
    problems = check_dynapcnn(convert(odd, current="instant"), (2, 200, 202)).problems
    assert any(p.startswith("pooling kind:") and "sums 8 x 8" in p for p in problems)
    assert any(p.startswith("kernel:") for p in problems)
    assert any(p.startswith("input size: (2, 200, 202)") for p in problems)


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_quantized_weights_keep_the_chip_constraints_and_an_exact_ann(rounding):
    ann, x = build("cnn", 4, rounding, threshold=0.7)
    snn = convert(ann, current="instant", schedule="per_step")
    r = check_dynapcnn(snn, (3, 8, 8), quantize_weights=8, integer_input=True)
    # what is left: the analog readout layer only
    assert kinds(r.problems) == {"integer weights", "readout"}
    assert all("Linear" in p for p in r.problems if p.startswith("integer weights"))
    xi = torch.randint(0, 3, (16, 3, 8, 8)).double()
    report = conversion_report(r.ann, convert(r.ann), xi, time_steps=4)
    assert report.totals("expected")["mismatched"] == 0  # the twin converts exactly


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
@pytest.mark.parametrize("current", ["instant", "expected"])
def test_the_integer_sinabs_network_fires_what_its_ann_twin_converts_to(rounding, current):
    pytest.importorskip("sinabs")
    from test_export_sinabs import mismatches
    ann, x = build("cnn", 4, rounding, threshold=0.7)
    snn = convert(ann, current=current, schedule="per_step")
    r = check_dynapcnn(snn, (3, 8, 8), quantize_weights=8, integer_input=True)
    w = [m.weight for m in r.sinabs if isinstance(m, nn.Conv2d)]
    assert all(torch.equal(t, t.round()) and t.abs().max() <= 127 for t in w)
    x_seq = torch.randint(0, 3, (4, 8, 3, 8, 8)).double()  # event counts
    bad, same_out, s = mismatches(convert(r.ann, current=current, schedule="per_step"),
                                  r.sinabs, x_seq)
    assert bad == 0 and same_out and 0 < float(s[0].mean()) < 1



def test_without_sinabs_the_import_error_says_what_to_install(monkeypatch):
    from sj_qvm.export import to_sinabs
    monkeypatch.setitem(sys.modules, "sinabs", None)
    with pytest.raises(ImportError, match=r"pip install 'sj-qvm\[sinabs\]'"):
        to_sinabs(convert(build("mlp", 2, "round")[0]))
