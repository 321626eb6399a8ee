"""The spiking max-pool's leading-count rule: binary spikes whose count is the window's max count."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from sj_qvm import QVMIFNode
from sj_qvm import _compat
from sj_qvm.pool import SpikingMaxPool, spiking_max_pool_seq, spiking_max_pool_seq_ref
from sj_qvm.quant import quantize_level

POOLS = [nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d(2, stride=1),
         nn.MaxPool2d(3, stride=2, ceil_mode=True), nn.MaxPool2d(2, dilation=2)]


def _boundary_levels(L, rounding, shape, seed=0):
    """Currents q whose z = L*q/theta (theta = 1) hit 0, every k and k + 1/2, plus below/above."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(-2, 2 * L + 3, dtype=torch.float64) / 2  # -1, -1/2, 0, 1/2, ..., L + 1
    z = grid[torch.randint(len(grid), shape, generator=g)]
    z[..., 0, 0] = 0.0  # a zero window at the top-left corner of every map
    z[..., 1, 0] = 0.0
    z[..., 0, 1] = 0.0
    z[..., 1, 1] = 0.0
    return z / L, torch.clamp(quantize_level(z, rounding), 0, L)


@pytest.mark.parametrize("pool", POOLS, ids=repr)
@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
@pytest.mark.parametrize("L", [1, 4, 8])
def test_expected_mode_count_is_max_level(pool, rounding, L):
    q, M = _boundary_levels(L, rounding, (3, 2, 7, 7), seed=L)
    node = QVMIFNode(v_threshold=1.0, v_init=rounding, current="expected", step_mode="m")
    spikes = node(q.unsqueeze(0).repeat(L, 1, 1, 1, 1))  # float64 throughout
    assert torch.equal(spikes.sum(0), M)  # the QVM invariant N == M, boundaries included
    out = spiking_max_pool_seq(spikes, pool)
    assert torch.equal(out.sum(0), F.max_pool2d(M, pool.kernel_size, pool.stride, pool.padding,
                                                pool.dilation, pool.ceil_mode))
    assert ((out == 0) | (out == 1)).all()
    assert torch.equal(out, spiking_max_pool_seq_ref(spikes, pool))


def test_ties_and_zero_windows():
    x = torch.zeros(4, 1, 1, 2, 4)
    x[:, 0, 0, 0, 0] = torch.tensor([1., 0., 1., 0.])  # window 1: a tie between two neurons
    x[:, 0, 0, 1, 1] = torch.tensor([0., 1., 0., 1.])  # with counts 2 and 2, spiking at other steps
    out = spiking_max_pool_seq(x, nn.MaxPool2d(2))     # window 2 (columns 2-3) is all zero
    assert out.sum(0).flatten().tolist() == [2.0, 0.0]
    assert ((out == 0) | (out == 1)).all()


def test_random_trains_binary_and_exact_in_count():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(16, 4, 3, 9, 9, generator=g) < 0.4).float()
    for pool in POOLS:
        out = spiking_max_pool_seq(x, pool)
        assert ((out == 0) | (out == 1)).all()
        ref = F.max_pool2d(x.sum(0), pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                           pool.ceil_mode)
        assert torch.equal(out.sum(0), ref)


def test_per_step_max_overcounts():
    """The converse: pooling each step's spikes (SJ's SeqToANNContainer(MaxPool2d)) overcounts."""
    x = torch.zeros(4, 1, 1, 2, 2)
    x[0, 0, 0, 0, 0] = 1.0
    x[1, 0, 0, 1, 1] = 1.0
    x[2, 0, 0, 0, 1] = 1.0
    naive = F.max_pool2d(x.flatten(0, 1), 2).view(4, 1, 1, 1, 1).sum(0)
    assert naive.item() == 3.0                 # every neuron fired once: the true max count is 1
    assert spiking_max_pool_seq(x, nn.MaxPool2d(2)).sum().item() == 1.0


def test_scaled_spikes_pool_by_channel():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(6, 2, 3, 4, 4, generator=g) < 0.5).float()
    scale = torch.tensor([0.5, 2.0, 1.25]).view(1, 1, 3, 1, 1)
    assert torch.allclose(spiking_max_pool_seq(x * scale, nn.MaxPool2d(2)),
                          spiking_max_pool_seq(x, nn.MaxPool2d(2)) * scale)


@pytest.mark.parametrize("pool", [nn.MaxPool1d(2), nn.MaxPool3d(2)], ids=repr)
def test_other_dims(pool):
    shape = (8, 2, 3) + ((6,) if isinstance(pool, nn.MaxPool1d) else (4, 4, 4))
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    out = spiking_max_pool_seq(x, pool)
    assert torch.equal(out, spiking_max_pool_seq_ref(x, pool))
    assert torch.equal(out.sum(0), pool(x.sum(0)))


def test_module_single_equals_multi_and_continues_state():
    g = torch.Generator().manual_seed(4)
    x = (torch.rand(8, 2, 3, 6, 6, generator=g) < 0.5).float()
    pool = nn.MaxPool2d(3, stride=2, padding=1)
    multi = SpikingMaxPool(pool, step_mode="m")
    single = SpikingMaxPool(pool, step_mode="s")
    whole = multi(x)
    _compat.reset_net(multi)
    halves = torch.cat([multi(x[:3]), multi(x[3:])])   # the second call continues from the state
    steps = torch.stack([single(xt) for xt in x])
    assert torch.equal(whole, halves) and torch.equal(whole, steps)
    _compat.reset_net(single)
    assert torch.equal(torch.stack([single(xt) for xt in x]), whole)  # reset clears the counts


def test_gradient_matches_reference_under_random_upstream():
    x = torch.rand(5, 2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 2, 2, 2, 2, dtype=torch.float64)
    pool = nn.MaxPool2d(2)
    (gx,) = torch.autograd.grad((spiking_max_pool_seq(x, pool) * g).sum(), x)
    (gr,) = torch.autograd.grad((spiking_max_pool_seq_ref(x, pool) * g).sum(), x)
    assert torch.allclose(gx, gr)


def test_bad_arguments():
    with pytest.raises(TypeError, match="pool must be an nn.MaxPool1d"):
        SpikingMaxPool(nn.AvgPool2d(2))
    with pytest.raises(ValueError, match="return_indices"):
        SpikingMaxPool(nn.MaxPool2d(2, return_indices=True))
    with pytest.raises(ValueError, match="step_mode"):
        SpikingMaxPool(nn.MaxPool2d(2), step_mode="x")
