"""QVMIFNode as a drop-in for SpikingJelly's IFNode: the host's keywords, soft reset only, and SJ
0.0.0.0.14's backend= / cupy_fp32_inference= accepted where they can be honoured or ignored."""
import inspect
import warnings

import pytest
import torch
import torch.nn as nn

from sj_qvm import QVMIFNode
from sj_qvm._compat import IFNode, SeqToANNContainer, functional, surrogate


def sj_style_model(node_cls, **node_kwargs):
    """A model written against SJ's IFNode keywords, as users write it."""
    return nn.Sequential(
        SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)),
        node_cls(**node_kwargs),
        SeqToANNContainer(nn.Flatten(), nn.Linear(4 * 6 * 6, 3)),
        node_cls(**node_kwargs))


SJ_KWARGS = dict(v_threshold=0.7, v_reset=None, surrogate_function=surrogate.ATan(),
                 detach_reset=True, step_mode="m")


def test_an_sj_model_takes_qvm_nodes_with_the_same_keywords():
    torch.manual_seed(0)
    host = sj_style_model(IFNode, **SJ_KWARGS)
    ours = sj_style_model(QVMIFNode, **SJ_KWARGS)
    ours.load_state_dict(host.state_dict())
    x = torch.rand(4, 2, 2, 6, 6)
    g = torch.randn(4, 2, 3)
    outs = []
    for net in (host, ours):
        functional.reset_net(net)
        xs = x.clone().requires_grad_()
        out = net(xs)
        (gx,) = torch.autograd.grad((out * g).sum(), xs)
        outs.append((out, gx))
    # V0 = 0 with soft reset is exactly IFNode(v_reset=None): same spikes, same gradients.
    assert torch.equal(outs[0][0], outs[1][0]) and 0 < outs[1][0].mean() < 1
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-6)
    assert all(m.v_reset is None for m in ours if isinstance(m, QVMIFNode))


def test_every_ifnode_keyword_is_accepted():
    host = set(inspect.signature(IFNode.__init__).parameters) - {"self"}
    ours = set(inspect.signature(QVMIFNode.__init__).parameters)
    assert host <= ours, host - ours
    node = QVMIFNode(v_threshold=0.5, v_reset=None, surrogate_function=surrogate.Sigmoid(),
                     detach_reset=False, step_mode="m", store_v_seq=True, backend="torch")
    node(torch.rand(3, 2, 4))
    assert node.v_seq.shape == (3, 2, 4) and node.last_dispatch[0] == "torch"


@pytest.mark.parametrize("v_reset", [0.0, 0, -0.5])
def test_a_hard_reset_is_refused_with_the_reason(v_reset):
    with pytest.raises(ValueError, match=r"v_reset=.* hard reset; QVM needs the soft reset "
                                         r"\(v_reset=None\)"):
        QVMIFNode(v_threshold=1.0, v_reset=v_reset)


@pytest.mark.parametrize("v_reset", ["none", True, torch.tensor(0.0)])
def test_v_reset_of_another_type_is_a_type_error(v_reset):
    with pytest.raises(TypeError, match="v_reset must be None"):
        QVMIFNode(v_reset=v_reset)


def test_sj_014_backend_values():
    """'torch' and 'cupy' are honoured (the same names mean the same paths); 'lava' cannot be."""
    assert QVMIFNode(backend="torch").backend == "torch"
    assert QVMIFNode(backend="cupy").backend == "cupy"
    assert QVMIFNode(backend="cpu").backend == "cpu"
    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'torch', 'cpu', "
                                         r"'cupy'\), "
                                         r"got 'lava'"):
        QVMIFNode(backend="lava")


def test_cupy_fp32_inference_is_accepted_true_with_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QVMIFNode(cupy_fp32_inference=False)  # SJ's default: silent
    with pytest.warns(UserWarning, match="ignores cupy_fp32_inference=True.*backend='auto'"):
        node = QVMIFNode(v_threshold=0.5, v_reset=None, cupy_fp32_inference=True, step_mode="m")
    x = torch.rand(3, 2, 4)
    with torch.no_grad():
        assert torch.equal(node(x), QVMIFNode(v_threshold=0.5, step_mode="m")(x))
    with pytest.raises(TypeError, match="cupy_fp32_inference must be True or False"):
        QVMIFNode(cupy_fp32_inference="yes")


def test_the_new_keywords_are_keyword_only():
    """QVMIFNode's own positional order (v_threshold, v_init, current, ...) is unchanged."""
    params = inspect.signature(QVMIFNode.__init__).parameters
    assert params["v_reset"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["cupy_fp32_inference"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(params)[1:4] == ["v_threshold", "v_init", "current"]
