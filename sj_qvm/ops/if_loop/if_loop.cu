// Fused multi-step IF loop: one thread per V neurons, looping over T (see if_loop.cuh).
//
// Loaded once per device into a cupy.RawModule by sj_qvm/ops/if_loop/cupy.py (NVRTC, with
// `-I` this folder). Kernel names: qvm_if_forward_<in>_<spike>_v<V> with V in {1, 16 / sizeof(in)},
// qvm_if_backward_<in>_v<V> with V in {1, 4}, qvm_if_count_<in>_v<V> (if_rate.cuh) as the forward;
// <in> in {f32, f16, bf16}, <spike> in {same, u8}.
#include "if_loop.cuh"
#include "if_rate.cuh"

#define QVM_FORWARD(NAME, TIN, TSPK, V)                                                           \
    extern "C" __global__ void __launch_bounds__(256) NAME(                                      \
        const TIN* __restrict__ x, TSPK* __restrict__ spike, float* __restrict__ v_out,           \
        float* __restrict__ v_seq, float* __restrict__ h_seq, const float* __restrict__ theta,    \
        float theta_value, long long theta_div, long long theta_mod,                              \
        const float* __restrict__ v0, float v0_value, long long v0_div, long long v0_mod,         \
        long long N, int T, int flags) {                                                          \
        const long long thread = (long long)blockIdx.x * blockDim.x + threadIdx.x;                \
        qvm::forward_thread<TIN, TSPK, V>(thread, x, spike, v_out, v_seq, h_seq, theta,           \
                                          theta_value, theta_div, theta_mod, v0, v0_value,        \
                                          v0_div, v0_mod, N, T, flags);                           \
    }

#define QVM_BACKWARD(NAME, TIN, V)                                                                \
    extern "C" __global__ void __launch_bounds__(256) NAME(                                      \
        const TIN* __restrict__ grad_spike, const float* __restrict__ grad_v,                     \
        const float* __restrict__ grad_v_seq, const float* __restrict__ h_seq,                    \
        TIN* __restrict__ grad_x, float* __restrict__ grad_v0, float* __restrict__ grad_theta,    \
        const float* __restrict__ theta, float theta_value, long long theta_div,                  \
        long long theta_mod, long long N, int T, int flags, int sg_id, float sg_p0,               \
        float sg_p1) {                                                                            \
        const long long thread = (long long)blockIdx.x * blockDim.x + threadIdx.x;                \
        qvm::backward_thread<TIN, V>(thread, grad_spike, grad_v, grad_v_seq, h_seq, grad_x,       \
                                     grad_v0, grad_theta, theta, theta_value, theta_div,          \
                                     theta_mod, N, T, flags, sg_id, sg_p0, sg_p1);                \
    }

QVM_FORWARD_KERNELS(QVM_FORWARD)

QVM_BACKWARD_KERNELS(QVM_BACKWARD)

#define QVM_COUNT(NAME, TIN, V)                                                                   \
    extern "C" __global__ void __launch_bounds__(256) NAME(                                      \
        const TIN* __restrict__ x, float* __restrict__ count, float* __restrict__ v_out,          \
        const float* __restrict__ theta, float theta_value, long long theta_div,                  \
        long long theta_mod, const float* __restrict__ v0, float v0_value, long long v0_div,      \
        long long v0_mod, long long N, int T, int flags) {                                        \
        const long long thread = (long long)blockIdx.x * blockDim.x + threadIdx.x;                \
        qvm::count_thread<TIN, V>(thread, x, count, v_out, theta, theta_value, theta_div,         \
                                  theta_mod, v0, v0_value, v0_div, v0_mod, N, T, flags);          \
    }

QVM_COUNT_KERNELS(QVM_COUNT)
