// Count-only IF loop on one constant current: the spike counts N of T soft-reset steps, without
// the [T, N] spike train (what a per-sample layer passes on is N * theta / T; nobody reads the
// train). The same per-neuron arithmetic as forward_thread in if_loop.cuh with F_CONSTANT, so N
// and V_T are those of that kernel (and of the torch reference) bit for bit.
//
//     q = x_0, or with F_EXPECTED the T-mean of T equal steps computed as forward_thread does
//     (r + (x_0 - r + sum_{t=1}^{T-1} (x_0 - r)) / T, r = x_0 or 0 if inf: equal to x_0 but
//     for the sign of a zero current)
//     N = #{t : s_t},  V_T as forward_thread;  count: [N] fp32, v_out: [N] fp32
#pragma once

#include "if_loop.cuh"

namespace qvm {

template <class Tin, int V>
QVM_HD void count_thread(i64 thread, const Tin* __restrict__ x, float* __restrict__ count,
                         float* __restrict__ v_out, const float* __restrict__ theta,
                         float theta_value, i64 theta_div, i64 theta_mod,
                         const float* __restrict__ v0, float v0_value, i64 v0_div, i64 v0_mod,
                         i64 N, int T, int flags) {
    const i64 n0 = thread * V;
    if (n0 >= N) return;
    const bool strict = flags & F_STRICT;
    float th[V], v[V], q[V], c[V];
    load_param<V>(flags & F_THETA_TENSOR, theta, theta_value, theta_div, theta_mod, n0, th);
    load_param<V>(flags & F_V0_TENSOR, v0, v0_value, v0_div, v0_mod, n0, v);
    load_lanes<Tin, V>(x + n0, q);
    if (flags & F_EXPECTED) {
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const float ref = is_inf(q[i]) ? 0.0f : q[i];
            float acc = sub_rn(q[i], ref);
            for (int t = 1; t < T; ++t) acc = add_rn(acc, sub_rn(q[i], ref));
            q[i] = add_rn(ref, div_rn(acc, (float)T));
        }
    }
    int n[V];
#pragma unroll
    for (int i = 0; i < V; ++i) n[i] = 0;
    for (int t = 0; t < T; ++t) {
#pragma unroll
        for (int i = 0; i < V; ++i) {
            bool fired;
            if_step(v[i], q[i], th[i], strict, fired);
            n[i] += fired ? 1 : 0;
        }
    }
#pragma unroll
    for (int i = 0; i < V; ++i) c[i] = (float)n[i];
    store_lanes<float, V>(count + n0, c);
    store_lanes<float, V>(v_out + n0, v);
}

}  // namespace qvm

// R(name, input type, neurons per thread), as QVM_FORWARD_KERNELS in if_loop.cuh.
#define QVM_COUNT_KERNELS(R)                                                                      \
    R(qvm_if_count_f32_v1, float, 1)                                                              \
    R(qvm_if_count_f32_v4, float, 4)                                                              \
    R(qvm_if_count_f16_v1, qvm::half_t, 1)                                                        \
    R(qvm_if_count_f16_v8, qvm::half_t, 8)                                                        \
    R(qvm_if_count_bf16_v1, qvm::bf16_t, 1)                                                       \
    R(qvm_if_count_bf16_v8, qvm::bf16_t, 8)
