"""The functional core: matched_v0 checked against the table in functional.py's docstring, by
simulation at the boundaries, and the fast loops' signatures against their reference twin."""
import inspect
import math

import pytest
import torch

from sj_qvm import QVMIFNode
from sj_qvm.functional import if_multi_step_ref, matched_v0
from sj_qvm.ops.if_loop import dispatch, torch as torch_path

# The ANN side of the table, written out independently of the package: M = clip(Q(z), 0, L).
Q = {"floor": math.floor, "round": lambda z: math.floor(z + 0.5), "ceil": math.ceil}
L = 4


def _boundary_z():
    """z = k, k + 1/2 (and 0) for k in [-1, L + 1], plus points just off each boundary."""
    z = [k / 2 for k in range(-2, 2 * (L + 1) + 1)]
    return z + [b + d for b in z for d in (-1 / 64, 1 / 64)]


def _spike_counts(rounding, z, theta):
    """N after T = L steps of the constant current q = z * theta / T, V0 and rule from matched_v0."""
    q = torch.tensor(z, dtype=torch.float64) * theta / L  # exact: theta and 1/L powers of 2
    v0, strict = matched_v0(rounding, theta)
    spikes, _, _ = if_multi_step_ref(q.expand(L, -1), v0, theta, strict)
    return spikes.sum(0).tolist()


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
@pytest.mark.parametrize("theta", [1.0, 0.5, 2.0])
def test_matched_v0_gives_n_equal_m_at_every_boundary(rounding, theta):
    z = _boundary_z()
    want = [min(max(Q[rounding](zi), 0), L) for zi in z]
    assert _spike_counts(rounding, z, theta) == want
    assert 0 in z and {0, L} <= set(want) and len(set(want)) == L + 1  # all levels reached


@pytest.mark.parametrize("rounding,other", [("floor", "round"), ("round", "floor"),
                                            ("round", "ceil"), ("ceil", "round")])
def test_a_mismatched_v0_breaks_the_table(rounding, other):
    """The converse: another rounding's V0 and rule miss M at some boundary."""
    z = _boundary_z()
    want = [min(max(Q[rounding](zi), 0), L) for zi in z]
    assert _spike_counts(other, z, 1.0) != want


def test_ceil_needs_the_strict_rule():
    """V0 = theta with U >= theta gives floor(z) + 1 at integer z, not ceil(z) = z."""
    v0, strict = matched_v0("ceil", 1.0)
    assert (v0, strict) == (1.0, True)
    q = torch.tensor([1.0, 2.0], dtype=torch.float64) / L
    loose = if_multi_step_ref(q.expand(L, -1), v0, 1.0, False)[0].sum(0)
    assert loose.tolist() == [2.0, 3.0]


def test_matched_v0_values_types_and_bad_rounding():
    assert matched_v0("floor", 0.8) == (0.0, False)
    assert matched_v0("round", 0.8) == (0.4, False)
    assert matched_v0("ceil", 0.8) == (0.8, True)
    theta = torch.tensor([0.5, 1.5], dtype=torch.float64)
    v0, strict = matched_v0("round", theta)
    assert torch.equal(v0, theta / 2) and v0.dtype == theta.dtype and not strict
    with pytest.raises(ValueError, match=r"rounding must be one of \('floor', 'round', 'ceil'\)"):
        matched_v0("half", 1.0)


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_the_node_takes_v0_and_rule_from_matched_v0(rounding):
    theta = torch.tensor([0.5, 0.9, 1.3])
    node = QVMIFNode(theta, rounding, step_mode="m")
    x = torch.zeros(2, 3, 4)
    v0, strict = matched_v0(rounding, theta)
    assert node.strict == strict
    assert torch.equal(node.initial_v(x), v0.view(1, 3, 1).expand(2, 3, 4))


@pytest.mark.parametrize("fast", [dispatch.if_multi_step_inference, torch_path.if_multi_step_torch,
                                  dispatch.if_multi_step_bptt], ids=lambda f: f.__name__)
def test_fast_loops_have_the_reference_signature(fast):
    assert inspect.signature(fast) == inspect.signature(if_multi_step_ref)


def test_inference_refuses_store_v_seq_in_the_surrogate_slot():
    """The old 6th positional store_v_seq now lands on surrogate_function: a clear TypeError."""
    with pytest.raises(TypeError, match="surrogate_function must be None or a callable.*keyword"):
        dispatch.if_multi_step_inference(torch.rand(2, 3), 0.0, 1.0, False, "instant", True)
