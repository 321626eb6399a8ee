// Host build of the CUDA kernels' arithmetic (sj_qvm/ops/if_loop/if_loop.cuh), for ctypes.
// Each entry runs the kernel's per-thread body for every thread index in turn, with the same
// arguments as the __global__ kernel of the same name in if_loop.cu (minus the launch geometry).
#include "if_loop.cuh"
#include "if_rate.cuh"

using qvm::i64;

#define HOST_FORWARD(NAME, TIN, TSPK, V)                                                          \
    extern "C" void NAME(i64 threads, const void* x, void* spike, float* v_out, float* v_seq,    \
                         float* h_seq, const float* theta, float theta_value, i64 theta_div,      \
                         i64 theta_mod, const float* v0, float v0_value, i64 v0_div, i64 v0_mod,  \
                         i64 N, int T, int flags) {                                               \
        for (i64 i = 0; i < threads; ++i)                                                         \
            qvm::forward_thread<TIN, TSPK, V>(i, (const TIN*)x, (TSPK*)spike, v_out, v_seq,       \
                                              h_seq, theta, theta_value, theta_div, theta_mod,    \
                                              v0, v0_value, v0_div, v0_mod, N, T, flags);         \
    }

#define HOST_BACKWARD(NAME, TIN, V)                                                               \
    extern "C" void NAME(i64 threads, const void* grad_spike, const float* grad_v,                \
                         const float* grad_v_seq, const float* h_seq, void* grad_x,               \
                         float* grad_v0, float* grad_theta, const float* theta, float theta_value,\
                         i64 theta_div, i64 theta_mod, i64 N, int T, int flags, int sg_id,        \
                         float sg_p0, float sg_p1) {                                              \
        for (i64 i = 0; i < threads; ++i)                                                         \
            qvm::backward_thread<TIN, V>(i, (const TIN*)grad_spike, grad_v, grad_v_seq, h_seq,    \
                                         (TIN*)grad_x, grad_v0, grad_theta, theta, theta_value,   \
                                         theta_div, theta_mod, N, T, flags, sg_id, sg_p0, sg_p1); \
    }

QVM_FORWARD_KERNELS(HOST_FORWARD)

QVM_BACKWARD_KERNELS(HOST_BACKWARD)

#define HOST_COUNT(NAME, TIN, V)                                                                  \
    extern "C" void NAME(i64 threads, const void* x, float* count, float* v_out,                 \
                         const float* theta, float theta_value, i64 theta_div, i64 theta_mod,     \
                         const float* v0, float v0_value, i64 v0_div, i64 v0_mod, i64 N, int T,   \
                         int flags) {                                                             \
        for (i64 i = 0; i < threads; ++i)                                                         \
            qvm::count_thread<TIN, V>(i, (const TIN*)x, count, v_out, theta, theta_value,         \
                                      theta_div, theta_mod, v0, v0_value, v0_div, v0_mod, N, T,   \
                                      flags);                                                     \
    }

QVM_COUNT_KERNELS(HOST_COUNT)

extern "C" float qvm_half_to_float(unsigned short h) { return qvm::half_to_float(h); }
extern "C" unsigned short qvm_float_to_half(float f) { return qvm::float_to_half(f); }
extern "C" float qvm_bf16_to_float(unsigned short b) { return qvm::bf16_to_float(b); }
extern "C" unsigned short qvm_float_to_bf16(float f) { return qvm::float_to_bf16(f); }
