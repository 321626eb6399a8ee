"""The compiled CPU kernels' two ways of running their threads' shares (ops/native.pool): on the
OpenMP pool (torch's own, where the extension shares it) and on a pthread each. Both run the
same shares, so every output and gradient is the same bit for bit; the choice at import follows
whether the process maps one OpenMP runtime."""
import multiprocessing

import pytest
import torch

from sj_qvm import QuantReLU
from sj_qvm._compat import surrogate
from sj_qvm.ops import native
from sj_qvm.ops.if_loop import if_multi_step_bptt
from sj_qvm.ops.if_loop.cpu import if_multi_step_cpu, spike_rate
from sj_qvm.ops.if_rate import if_rate_cpu

from native_settings import both_ways, switched

needs_native = pytest.mark.skipif(
    not native.available(),
    reason=f"sj_qvm.ops._cpu is not built ({native.IMPORT_ERROR}) or SJ_QVM_NO_NATIVE is set")


@pytest.fixture
def two_threads(small_shares):
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def both_pools(fn):
    """``fn()`` with the shares on pthreads and on the OpenMP pool; skips where the extension
    was built without OpenMP."""
    return both_ways(native.pool, fn, "the extension was built without OpenMP: only pthreads run")


def test_pool_mode_is_checked():
    if native._module is None:
        pytest.skip("the extension is not built")
    with pytest.raises(ValueError, match=r"mode must be one of \(0, 1, None\), got 2"):
        native.pool(2)
    with pytest.raises(ValueError, match="pool: mode must be -1"):
        native._module.pool(3)


def _maps(*paths):
    lines = ["55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]\n",
             "7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 \n"]
    for i, p in enumerate(paths):
        lines.append(f"7f1c2b{i:02d}0000-7f1c2b{i:02d}8000 r-xp 00002000 fd:01 {1000 + i}"
                     f"                    {p}\n")
        lines.append(f"7f1c2c{i:02d}0000-7f1c2c{i:02d}1000 r--p 0000a000 fd:01 {1000 + i}"
                     f"                    {p}\n")
    return lines


def test_openmp_runtimes_are_read_from_the_maps():
    torch_gomp = "/env/lib/python3.11/site-packages/torch/lib/libgomp.so.1"
    assert native.openmp_runtimes(_maps()) == set()
    assert native.openmp_runtimes(_maps(torch_gomp, "/usr/lib/libc.so.6")) == {torch_gomp}
    # torch's wheel with its renamed copy, and the system's that the extension pulled in: two
    two = native.openmp_runtimes(_maps("/env/torch/lib/libgomp-a34b3233.so.1",
                                       "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0"))
    assert len(two) == 2
    assert native.openmp_runtimes(_maps("/opt/intel/lib/libiomp5.so", torch_gomp)) == {
        "/opt/intel/lib/libiomp5.so", torch_gomp}
    # a path with spaces is one path
    assert native.openmp_runtimes(_maps("/my env/lib/libomp.so")) == {"/my env/lib/libomp.so"}


@needs_native
def test_the_pool_at_import_follows_the_runtimes_mapped():
    """Switched on at import exactly where the process maps one OpenMP runtime (checked after
    import, so an unrelated later load could only add runtimes, never remove them)."""
    if not getattr(native._module, "OPENMP", 0):
        assert native.pool() == 0 and not native.shares_torch_pool()
        return
    with open("/proc/self/maps") as f:
        runtimes = native.openmp_runtimes(f)
    assert len(runtimes) >= 1  # torch's, at least
    if len(runtimes) == 1:
        assert native.shares_torch_pool() and native.pool() == 1


@needs_native
@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_if_kernels_agree_on_both_pools(dtype):
    torch.manual_seed(0)
    T = 4
    theta = torch.tensor([0.75, 1.0, 0.5], dtype=dtype).view(1, 3, 1)
    x_seq = torch.rand(T, 40, 3, 900, dtype=dtype) * 1.4 - 0.2  # 108000 neurons, 2 shares
    q = x_seq[0].contiguous()

    def run():
        before = native.CALLS["if_forward"]
        out = []
        for current in ("instant", "expected"):
            out += list(if_multi_step_cpu(x_seq, 0.5 * theta, theta, False, current,
                                          store_v_seq=True))
        out += list(if_rate_cpu(q, T, 0.5 * theta, theta, True))
        out.append(spike_rate(out[0], theta))
        assert native.CALLS["if_forward"] == before + 2
        return out
    pthreads, openmp = both_pools(run)
    for a, b in zip(pthreads, openmp):
        assert torch.equal(a, b)
    assert 0 < float(pthreads[0].mean()) < 1  # spikes and silence both occur


@needs_native
@pytest.mark.usefixtures("two_threads")
def test_backward_kernels_agree_on_both_pools():
    """The BPTT backward under a random upstream gradient, and QuantReLU's backward, whose
    dL/dgamma rows are one per share: the same on either pool."""
    torch.manual_seed(1)
    x = torch.rand(4, 30, 3, 800) * 1.4 - 0.2
    theta = torch.tensor([0.5, 1.0, 0.75]).view(3, 1)
    g = torch.randn_like(x)
    a = torch.randn(30, 3, 800, 4) * 2

    def run():
        xg = x.clone().requires_grad_()
        th = theta.clone().requires_grad_()
        before = native.CALLS["if_backward"]
        s, v, _ = if_multi_step_bptt(xg, 0.0, th, False, "instant", surrogate.Sigmoid(), False,
                                     False)
        ((s * g).sum() + v.sum()).backward()
        assert native.CALLS["if_backward"] == before + 1
        act = QuantReLU(4, "round", [1.5, 0.5, 3.0])
        ag = a.clone().requires_grad_()
        act(ag).backward(torch.ones_like(a))
        return s.detach(), xg.grad, th.grad, ag.grad, act.threshold.grad
    pthreads, openmp = both_pools(run)
    for u, w in zip(pthreads, openmp):
        assert torch.equal(u, w)


def _child_run(x, queue):
    # Two threads, as a user's forked process may ask for; torch's own parallel ops would hang
    # here (its pool is GNU OpenMP's too), so the child sums with numpy.
    torch.set_num_threads(2)
    queue.put((native.pool(), float(if_multi_step_cpu(x, 0.0, 1.0)[0].numpy().sum())))


@needs_native
@pytest.mark.usefixtures("two_threads")
def test_a_forked_child_runs_the_kernels_on_pthreads():
    """The parent has used the pool; a forked child gets pthreads (the pool's workers are not
    copied by fork) and finishes with the parent's result."""
    if not hasattr(multiprocessing, "get_context") or "fork" not in \
            multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    x = torch.rand(4, 200_000)
    with switched(native.pool, 1):
        expected = float(if_multi_step_cpu(x, 0.0, 1.0)[0].numpy().sum())
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_run, args=(x, queue))
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
            pytest.fail("the forked child hung in the kernel")
        assert child.exitcode == 0
        mode, total = queue.get(timeout=5)
    assert mode == 0 and total == expected
