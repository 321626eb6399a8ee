"""What the kernels' launch refuses, without a GPU: the host runner refuses what the GPU path does
(a tensor that requires grad, on another device, not contiguous, a misaligned vector pointer),
and the launcher checks device, dtype and layout once, naming the argument."""
import numpy as np
import pytest
import torch

from cuda_host import host  # noqa: F401 -- the fixture
from sj_qvm.functional import if_multi_step_ref
from sj_qvm.ops.if_loop import launch
from sj_qvm.ops.if_rate import if_rate_cupy
from sj_qvm.ops.if_loop.cupy import if_multi_step_cupy


# ---- the host runner refuses what the GPU path refuses ----------------------------------------
def _forward_args(x, spike, v):
    n = x.shape[-1]
    return (x, spike, v, None, None, None, np.float32(1.0), np.int64(1), np.int64(1), None,
            np.float32(0.0), np.int64(1), np.int64(1), np.int64(n), np.int32(x.shape[0]),
            np.int32(0))


def test_the_host_runner_refuses_what_the_gpu_path_refuses(host):
    T, n = 2, 8
    cpu = torch.device("cpu")
    x, spike, v = torch.rand(T, n), torch.empty(T, n), torch.empty(n)
    host.launch("qvm_if_forward_f32_same_v4", n // 4, _forward_args(x, spike, v), cpu)
    assert torch.equal(spike, if_multi_step_ref(x, 0.0, 1.0)[0])
    with pytest.raises(RuntimeError, match="argument 0: Can't get __cuda_array_interface__"):
        host.launch("qvm_if_forward_f32_same_v4", n // 4,
                    _forward_args(x.clone().requires_grad_(), spike, v), cpu)
    with pytest.raises(RuntimeError, match="argument 2 is on meta"):
        host.launch("qvm_if_forward_f32_same_v4", n // 4,
                    _forward_args(x, spike, torch.empty(n, device="meta")), cpu)
    with pytest.raises(RuntimeError, match="argument 1 is not contiguous"):
        host.launch("qvm_if_forward_f32_same_v4", n // 4,
                    _forward_args(x, torch.empty(n, T).t(), v), cpu)
    shifted = torch.rand(T * n + 1)[1:].view(T, n)  # 4 bytes past a 16-byte boundary
    with pytest.raises(RuntimeError, match=r"misaligned address \(kernel argument 0 "):
        host.launch("qvm_if_forward_f32_same_v4", n // 4, _forward_args(shifted, spike, v), cpu)
    host.launch("qvm_if_forward_f32_same_v1", n, _forward_args(shifted, spike, v), cpu)
    assert torch.equal(spike, if_multi_step_ref(shifted, 0.0, 1.0)[0])  # scalar loads: fine


# ---- arguments on another device, in another dtype ---------------------------------------------
def test_theta_or_v0_on_another_device_is_refused(host):
    x = torch.rand(3, 2, 8)
    with pytest.raises(ValueError, match="v_threshold is on meta but the input is on cpu"):
        if_multi_step_cupy(x, 0.0, torch.ones(2, 1, device="meta"))
    with pytest.raises(ValueError, match="v_init is on meta but the input is on cpu"):
        if_multi_step_cupy(x, torch.tensor(0.0, device="meta"), 1.0)  # 0-dim, but not CPU
    with pytest.raises(ValueError, match="v_init is on meta but the input is on cpu"):
        if_rate_cupy(x[0], 4, torch.zeros(2, 1, device="meta"), 1.0)
    # The launcher's own checks, for a caller of launch (or the custom ops) itself.
    with pytest.raises(ValueError, match="theta is on meta, the kernel runs on cpu"):
        launch.forward(x, torch.ones(2, 1, device="meta"), 0.0, None, 0.0, False, False, False,
                       False, torch.float32)
    spike, v, _, h = launch.forward(x, None, 1.0, None, 0.0, False, False, False, True,
                                    torch.float32)
    with pytest.raises(TypeError, match="h_seq must be torch.float32 for this kernel"):
        launch.backward(torch.ones_like(spike), None, None, h.half(), None, 1.0, False, False,
                        -1, 0.0, 0.0, False, False, False, torch.float32)
