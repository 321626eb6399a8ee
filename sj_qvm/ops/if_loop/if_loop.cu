// Fused multi-step IF loop: one thread per V neurons, looping over T (see if_loop.cuh).
//
// Loaded once per device into a cupy.RawModule by sj_qvm/ops/if_loop/cupy.py (NVRTC, with
// `-I` this folder). Kernel names: qvm_if_forward_<in>_<spike>_v<V> with V in {1, 16 / sizeof(in)},
// qvm_if_backward_<in>_v<V> with V in {1, 4}; <in> in {f32, f16, bf16}, <spike> in {same, u8}.
#include "if_loop.cuh"

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

QVM_FORWARD(qvm_if_forward_f32_same_v1, float, float, 1)
QVM_FORWARD(qvm_if_forward_f32_same_v4, float, float, 4)
QVM_FORWARD(qvm_if_forward_f32_u8_v1, float, unsigned char, 1)
QVM_FORWARD(qvm_if_forward_f32_u8_v4, float, unsigned char, 4)
QVM_FORWARD(qvm_if_forward_f16_same_v1, qvm::half_t, qvm::half_t, 1)
QVM_FORWARD(qvm_if_forward_f16_same_v8, qvm::half_t, qvm::half_t, 8)
QVM_FORWARD(qvm_if_forward_f16_u8_v1, qvm::half_t, unsigned char, 1)
QVM_FORWARD(qvm_if_forward_f16_u8_v8, qvm::half_t, unsigned char, 8)
QVM_FORWARD(qvm_if_forward_bf16_same_v1, qvm::bf16_t, qvm::bf16_t, 1)
QVM_FORWARD(qvm_if_forward_bf16_same_v8, qvm::bf16_t, qvm::bf16_t, 8)
QVM_FORWARD(qvm_if_forward_bf16_u8_v1, qvm::bf16_t, unsigned char, 1)
QVM_FORWARD(qvm_if_forward_bf16_u8_v8, qvm::bf16_t, unsigned char, 8)

QVM_BACKWARD(qvm_if_backward_f32_v1, float, 1)
QVM_BACKWARD(qvm_if_backward_f32_v4, float, 4)
QVM_BACKWARD(qvm_if_backward_f16_v1, qvm::half_t, 1)
QVM_BACKWARD(qvm_if_backward_f16_v4, qvm::half_t, 4)
QVM_BACKWARD(qvm_if_backward_bf16_v1, qvm::bf16_t, 1)
QVM_BACKWARD(qvm_if_backward_bf16_v4, qvm::bf16_t, 4)
