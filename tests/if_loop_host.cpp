// Host build of the CUDA kernels' arithmetic (sj_qvm/ops/if_loop/if_loop.cuh), for ctypes.
// Each entry runs the kernel's per-thread body for every thread index in turn, with the same
// arguments as the __global__ kernel of the same name in if_loop.cu (minus the launch geometry).
//
// A GPU faults ("misaligned address") on a vector access through a pointer that is not aligned
// to its Pack<T, V>, where x86 would quietly read it; so each entry first checks the arrays it
// accesses V elements at a time, as the device would, and returns instead of running:
// 0 ran; k > 0: the k-th kernel argument (1-based, launch geometry excluded) is misaligned;
// -1: N is not a multiple of V (rows after the first would be misaligned).
#include <stdint.h>

#include "if_loop.cuh"
#include "if_rate.cuh"

using qvm::i64;

template <class T, int V>
static bool misaligned(const void* p) {
    return V > 1 && p != nullptr && reinterpret_cast<uintptr_t>(p) % alignof(qvm::Pack<T, V>) != 0;
}

#define HOST_CHECK(T, V, P, K) if (misaligned<T, V>(P)) return K;

#define HOST_FORWARD(NAME, TIN, TSPK, V)                                                          \
    extern "C" int NAME(i64 threads, const void* x, void* spike, float* v_out, float* v_seq,     \
                        float* h_seq, const float* theta, float theta_value, i64 theta_div,       \
                        i64 theta_mod, const float* v0, float v0_value, i64 v0_div, i64 v0_mod,   \
                        i64 N, int T, int flags) {                                                \
        if (N % V) return -1;                                                                     \
        HOST_CHECK(TIN, V, x, 1) HOST_CHECK(TSPK, V, spike, 2) HOST_CHECK(float, V, v_out, 3)     \
        HOST_CHECK(float, V, v_seq, 4) HOST_CHECK(float, V, h_seq, 5)                             \
        for (i64 i = 0; i < threads; ++i)                                                         \
            qvm::forward_thread<TIN, TSPK, V>(i, (const TIN*)x, (TSPK*)spike, v_out, v_seq,       \
                                              h_seq, theta, theta_value, theta_div, theta_mod,    \
                                              v0, v0_value, v0_div, v0_mod, N, T, flags);         \
        return 0;                                                                                 \
    }

#define HOST_BACKWARD(NAME, TIN, V)                                                               \
    extern "C" int NAME(i64 threads, const void* grad_spike, const float* grad_v,                 \
                        const float* grad_v_seq, const float* h_seq, void* grad_x,                \
                        float* grad_v0, float* grad_theta, const float* theta, float theta_value, \
                        i64 theta_div, i64 theta_mod, i64 N, int T, int flags, int sg_id,         \
                        float sg_p0, float sg_p1) {                                               \
        if (N % V) return -1;                                                                     \
        HOST_CHECK(TIN, V, grad_spike, 1) HOST_CHECK(float, V, grad_v, 2)                         \
        HOST_CHECK(float, V, grad_v_seq, 3) HOST_CHECK(float, V, h_seq, 4)                        \
        HOST_CHECK(TIN, V, grad_x, 5) HOST_CHECK(float, V, grad_v0, 6)                            \
        HOST_CHECK(float, V, grad_theta, 7)                                                       \
        for (i64 i = 0; i < threads; ++i)                                                         \
            qvm::backward_thread<TIN, V>(i, (const TIN*)grad_spike, grad_v, grad_v_seq, h_seq,    \
                                         (TIN*)grad_x, grad_v0, grad_theta, theta, theta_value,   \
                                         theta_div, theta_mod, N, T, flags, sg_id, sg_p0, sg_p1); \
        return 0;                                                                                 \
    }

QVM_FORWARD_KERNELS(HOST_FORWARD)

QVM_BACKWARD_KERNELS(HOST_BACKWARD)

#define HOST_COUNT(NAME, TIN, V)                                                                  \
    extern "C" int NAME(i64 threads, const void* x, float* count, float* v_out,                  \
                        const float* theta, float theta_value, i64 theta_div, i64 theta_mod,      \
                        const float* v0, float v0_value, i64 v0_div, i64 v0_mod, i64 N, int T,    \
                        int flags) {                                                              \
        if (N % V) return -1;                                                                     \
        HOST_CHECK(TIN, V, x, 1) HOST_CHECK(float, V, count, 2) HOST_CHECK(float, V, v_out, 3)    \
        for (i64 i = 0; i < threads; ++i)                                                         \
            qvm::count_thread<TIN, V>(i, (const TIN*)x, count, v_out, theta, theta_value,         \
                                      theta_div, theta_mod, v0, v0_value, v0_div, v0_mod, N, T,   \
                                      flags);                                                     \
        return 0;                                                                                 \
    }

QVM_COUNT_KERNELS(HOST_COUNT)

extern "C" float qvm_half_to_float(unsigned short h) { return qvm::half_to_float(h); }
extern "C" unsigned short qvm_float_to_half(float f) { return qvm::float_to_half(f); }
extern "C" float qvm_bf16_to_float(unsigned short b) { return qvm::bf16_to_float(b); }
extern "C" unsigned short qvm_float_to_bf16(float f) { return qvm::float_to_bf16(f); }
