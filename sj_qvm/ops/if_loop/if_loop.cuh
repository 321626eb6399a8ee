// Per-thread arithmetic of the fused multi-step IF loop (soft reset, QVM firing rules).
//
// Everything here is `__host__ __device__`: if_loop.cu wraps it in __global__ kernels that NVRTC
// builds for the GPU, and tests/if_loop_host.cpp builds the very same functions for the host with
// g++ so that the kernel's arithmetic is checked against the torch reference without a GPU.
//
// One thread owns V consecutive neurons (V = 1, or 16 bytes of input for vector loads) and loops
// over T. Tensors are [T, N] row-major (N = neurons per step); with F_CONSTANT the input x is one
// [N] row that every step reads again (a constant current, as the per-sample schedule passes),
// so the arithmetic is that of the [T, N] input whose rows all equal it. The membrane state is fp32 whatever
// the input dtype; for fp32 inputs every operation below is the one sj_qvm.functional does, in the
// same order, so spikes and v are bit-identical to the reference, subnormals included (the
// "exact fp32 arithmetic" of if_float.cuh):
//
//     q     = r + (x_0 - r + sum_{t=1}^{T-1} (x_t - r), in time order) / T, r = x_0 or 0 if inf
//                                                                   (current = expected)
//     U_t   = V_{t-1} + q_t
//     h_t   = U_t - theta
//     s_t   = h_t >= 0   (h_t > 0 when strict, i.e. v_init = "ceil")
//     V_t   = s_t ? h_t : U_t            (== U_t - theta * s_t exactly, with s_t in {0, 1})
#pragma once

#include "if_float.cuh"
#include "qvm_enums.h"

namespace qvm {

typedef long long i64;

// The flags and surrogate ids (F_*, B_*, SG_*) are in qvm_enums.h, outside the namespace.

// ---- the per-neuron arithmetic ---------------------------------------------------------------
// One soft-reset IF step; returns h = U - theta, updates v, sets the spike.
QVM_HD float if_step(float& v, float q, float theta, bool strict, bool& spike) {
    const float u = add_rn(v, q);
    const float h = sub_rn(u, theta);
    spike = fires(h, strict);
    v = spike ? h : u;
    return h;
}

// dL/dh = g * sg'(h) for the surrogate `id` with parameters p0, p1 (see surrogates.py).
// The strict rule is 1 - sg(-h) in the reference, whose derivative is sg'(-h).
QVM_HD float surrogate_backward(int id, float p0, float p1, float g, float h, bool strict) {
    const float x = strict ? -h : h;
    if (id == SG_NONE) return 0.0f;
    if (id == SG_ATAN) {  // p0 = alpha / 2, p1 = pi * alpha / 2: p0 / (1 + (p1 x)^2)
        const float ax = p1 * x;
        return p0 / (1.0f + ax * ax) * g;
    }
    // SG_SIGMOID, p0 = alpha: sg' = alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))
    const float s = 1.0f / (1.0f + expf(-(x * p0)));
    return g * (1.0f - s) * s * p0;
}

// Channel index (n / div) % mod of V consecutive neurons n0..n0+V-1, with one division.
template <int V>
QVM_HD void lane_index(i64 n0, i64 div, i64 mod, i64 (&idx)[V]) {
    const i64 q = n0 / div;
    i64 r = n0 - q * div, c = q % mod;
#pragma unroll
    for (int i = 0; i < V; ++i) {
        idx[i] = c;
        if (++r == div) { r = 0; if (++c == mod) c = 0; }
    }
}

// theta or V0 of V consecutive neurons n0..: the per-channel tensor p (when `tensor`) read at
// their channel indices, else the scalar `value` in every lane.
template <int V>
QVM_HD void load_param(bool tensor, const float* __restrict__ p, float value, i64 div, i64 mod,
                       i64 n0, float (&out)[V]) {
    if (tensor) {
        i64 idx[V];
        lane_index<V>(n0, div, mod, idx);
#pragma unroll
        for (int i = 0; i < V; ++i) out[i] = p[idx[i]];
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) out[i] = value;
    }
}

// Step V lanes once and store s_t (and h_t, V_t when asked) at offset `off`.
template <class Tspk, int V>
QVM_HD void step_lanes(float (&v)[V], const float (&q)[V], const float (&th)[V], bool strict,
                       Tspk* __restrict__ spike, float* __restrict__ v_seq,
                       float* __restrict__ h_seq, i64 off, int flags) {
    float s[V], h[V];
#pragma unroll
    for (int i = 0; i < V; ++i) {
        bool fired;
        h[i] = if_step(v[i], q[i], th[i], strict, fired);
        s[i] = fired ? 1.0f : 0.0f;
    }
    store_lanes<Tspk, V>(spike + off, s);
    if (flags & F_STORE_H) store_lanes<float, V>(h_seq + off, h);
    if (flags & F_STORE_V_SEQ) store_lanes<float, V>(v_seq + off, v);
}

// Forward of thread `thread`: neurons [thread * V, thread * V + V). Requires N % V == 0 and
// 16-byte aligned rows when V > 1 (the launcher checks).
template <class Tin, class Tspk, int V>
QVM_HD void forward_thread(i64 thread,
                           const Tin* __restrict__ x, Tspk* __restrict__ spike,
                           float* __restrict__ v_out, float* __restrict__ v_seq,
                           float* __restrict__ h_seq,
                           const float* __restrict__ theta, float theta_value, i64 theta_div,
                           i64 theta_mod,
                           const float* __restrict__ v0, float v0_value, i64 v0_div, i64 v0_mod,
                           i64 N, int T, int flags) {
    const i64 n0 = thread * V;
    if (n0 >= N) return;
    const bool strict = flags & F_STRICT;
    const i64 xs = (flags & F_CONSTANT) ? 0 : N;  // the input's step stride
    float th[V], v[V];
    load_param<V>(flags & F_THETA_TENSOR, theta, theta_value, theta_div, theta_mod, n0, th);
    load_param<V>(flags & F_V0_TENSOR, v0, v0_value, v0_div, v0_mod, n0, v);
    if (flags & F_EXPECTED) {
        float x0[V], ref[V], acc[V], q[V];
        load_lanes<Tin, V>(x + n0, x0);
        // functional.expected_current: offset by x_0, or by 0 where x_0 is infinite (inf - inf
        // would be NaN), so +inf saturates at T spikes as on the CPU.
#pragma unroll
        for (int i = 0; i < V; ++i) {
            ref[i] = is_inf(x0[i]) ? 0.0f : x0[i];
            acc[i] = sub_rn(x0[i], ref[i]);
        }
        for (int t = 1; t < T; ++t) {
            float xt[V];
            load_lanes<Tin, V>(x + (i64)t * xs + n0, xt);
#pragma unroll
            for (int i = 0; i < V; ++i) acc[i] = add_rn(acc[i], sub_rn(xt[i], ref[i]));
        }
#pragma unroll
        for (int i = 0; i < V; ++i) q[i] = add_rn(ref[i], div_rn(acc[i], (float)T));
        for (int t = 0; t < T; ++t)
            step_lanes<Tspk, V>(v, q, th, strict, spike, v_seq, h_seq, (i64)t * N + n0, flags);
    } else {
        float q[V], next[V];
        load_lanes<Tin, V>(x + n0, next);
        for (int t = 0; t < T; ++t) {
#pragma unroll
            for (int i = 0; i < V; ++i) q[i] = next[i];
            if (t + 1 < T) load_lanes<Tin, V>(x + (i64)(t + 1) * xs + n0, next);  // prefetch
            step_lanes<Tspk, V>(v, q, th, strict, spike, v_seq, h_seq, (i64)t * N + n0, flags);
        }
    }
    store_lanes<float, V>(v_out + n0, v);
}

// BPTT of thread `thread`, from the stored h_t (s_t is recomputed from h_t with the same rule):
//   dL/ds_t = g_spike_t - theta * gV_t            (no second term with detach_reset)
//   dL/dU_t = gV_t + dL/ds_t * sg'(h_t)  = dL/dq_t = dL/dV_{t-1}
//   dL/dtheta += -dL/ds_t * sg'(h_t) - s_t * gV_t
// where gV_t = dL/dV_t (from step t+1, the upstream grad of v for t = T-1, plus g_v_seq_t).
// For the expected current dL/dq sums over t and every x_t receives dL/dq / T.
template <class Tin, int V>
QVM_HD void backward_thread(i64 thread,
                            const Tin* __restrict__ grad_spike, const float* __restrict__ grad_v,
                            const float* __restrict__ grad_v_seq, const float* __restrict__ h_seq,
                            Tin* __restrict__ grad_x, float* __restrict__ grad_v0,
                            float* __restrict__ grad_theta,
                            const float* __restrict__ theta, float theta_value, i64 theta_div,
                            i64 theta_mod, i64 N, int T, int flags, int sg_id, float sg_p0,
                            float sg_p1) {
    const i64 n0 = thread * V;
    if (n0 >= N) return;
    const bool strict = flags & F_STRICT;
    const bool detach = flags & B_DETACH_RESET;
    float th[V], gv[V], gth[V], gq[V];
    load_param<V>(flags & F_THETA_TENSOR, theta, theta_value, theta_div, theta_mod, n0, th);
    if (flags & B_GRAD_V) {
        load_lanes_f32<V>(grad_v + n0, gv);
    } else {
#pragma unroll
        for (int i = 0; i < V; ++i) gv[i] = 0.0f;
    }
#pragma unroll
    for (int i = 0; i < V; ++i) { gth[i] = 0.0f; gq[i] = 0.0f; }
    for (int t = T - 1; t >= 0; --t) {
        const i64 off = (i64)t * N + n0;
        float h[V], gs[V];
        load_lanes_f32<V>(h_seq + off, h);
        load_lanes<Tin, V>(grad_spike + off, gs);
        if (flags & B_GRAD_V_SEQ) {
            float gvs[V];
            load_lanes_f32<V>(grad_v_seq + off, gvs);
#pragma unroll
            for (int i = 0; i < V; ++i) gv[i] = gv[i] + gvs[i];
        }
        float gu[V];
#pragma unroll
        for (int i = 0; i < V; ++i) {
            const float g_s = detach ? gs[i] : gs[i] + (-gv[i]) * th[i];
            const float g_h = surrogate_backward(sg_id, sg_p0, sg_p1, g_s, h[i], strict);
            gu[i] = gv[i] + g_h;
            gth[i] = gth[i] - g_h;
            if (fires(h[i], strict)) gth[i] = gth[i] - gv[i];
            gq[i] = gq[i] + gu[i];
            gv[i] = gu[i];
        }
        if (!(flags & F_EXPECTED)) store_lanes<Tin, V>(grad_x + off, gu);
    }
    if (flags & F_EXPECTED) {
        // q = x_0 + acc / T, acc = sum_{t>=1} (x_t - x_0): dq/dx_t = 1/T, dq/dx_0 = 1 - (T-1)/T.
        float g_acc[V], g0[V];
#pragma unroll
        for (int i = 0; i < V; ++i) {
            g_acc[i] = gq[i] / (float)T;
            g0[i] = gq[i];
        }
        for (int t = 1; t < T; ++t) {
#pragma unroll
            for (int i = 0; i < V; ++i) g0[i] = g0[i] - g_acc[i];
            store_lanes<Tin, V>(grad_x + (i64)t * N + n0, g_acc);
        }
        store_lanes<Tin, V>(grad_x + n0, g0);
    }
    if (flags & B_NEED_V0) store_lanes<float, V>(grad_v0 + n0, gv);
    if (flags & B_NEED_THETA) store_lanes<float, V>(grad_theta + n0, gth);
}

}  // namespace qvm

// The kernels: one list for the CUDA build (if_loop.cu) and the host build of the tests
// (tests/if_loop_host.cpp). F(name, input type, spike type, neurons per thread) and
// B(name, input type, neurons per thread); cupy.py launches them by these names.
#define QVM_FORWARD_KERNELS(F)                                                                    \
    F(qvm_if_forward_f32_same_v1, float, float, 1)                                                \
    F(qvm_if_forward_f32_same_v4, float, float, 4)                                                \
    F(qvm_if_forward_f32_u8_v1, float, unsigned char, 1)                                          \
    F(qvm_if_forward_f32_u8_v4, float, unsigned char, 4)                                          \
    F(qvm_if_forward_f16_same_v1, qvm::half_t, qvm::half_t, 1)                                    \
    F(qvm_if_forward_f16_same_v8, qvm::half_t, qvm::half_t, 8)                                    \
    F(qvm_if_forward_f16_u8_v1, qvm::half_t, unsigned char, 1)                                    \
    F(qvm_if_forward_f16_u8_v8, qvm::half_t, unsigned char, 8)                                    \
    F(qvm_if_forward_bf16_same_v1, qvm::bf16_t, qvm::bf16_t, 1)                                   \
    F(qvm_if_forward_bf16_same_v8, qvm::bf16_t, qvm::bf16_t, 8)                                   \
    F(qvm_if_forward_bf16_u8_v1, qvm::bf16_t, unsigned char, 1)                                   \
    F(qvm_if_forward_bf16_u8_v8, qvm::bf16_t, unsigned char, 8)

#define QVM_BACKWARD_KERNELS(B)                                                                   \
    B(qvm_if_backward_f32_v1, float, 1)                                                           \
    B(qvm_if_backward_f32_v4, float, 4)                                                           \
    B(qvm_if_backward_f16_v1, qvm::half_t, 1)                                                     \
    B(qvm_if_backward_f16_v4, qvm::half_t, 4)                                                     \
    B(qvm_if_backward_bf16_v1, qvm::bf16_t, 1)                                                    \
    B(qvm_if_backward_bf16_v4, qvm::bf16_t, 4)
