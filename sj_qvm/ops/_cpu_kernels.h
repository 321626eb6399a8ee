/* The kernels of sj_qvm/ops/_cpu.c (see the contract there): the task one thread runs, and the
 * loops. Included once, by _cpu.c; no Python API here. */
#ifndef SJ_QVM_CPU_KERNELS_H
#define SJ_QVM_CPU_KERNELS_H

#include <stdint.h>
#include <math.h>
#include <stddef.h>

typedef struct {
    uintptr_t x, out, spike, v, v_seq, h, g_spike, g_v, g_v_seq, g_x, g_v0, g_th, p_addr;
    double p_value;
    ptrdiff_t p_div, p_mod, x_tstride, n, begin, end, levels;
    int T, rounding, strict, expected, dtype, kind, detach, sg_id;
    double sg_p0, sg_p1;
} task;

/* Runs BODY over [begin, end) in segments where the parameter p is one value, `p`. */
#define SEGMENTS(type, t, BODY)                                                             \
    for (ptrdiff_t i0 = (t)->begin; i0 < (t)->end;) {                                      \
        ptrdiff_t i1 = (t)->end;                                                           \
        type p = (type)(t)->p_value;                                                        \
        if ((t)->p_addr) {                                                                  \
            const ptrdiff_t blk = i0 / (t)->p_div;                                         \
            i1 = (blk + 1) * (t)->p_div < i1 ? (blk + 1) * (t)->p_div : i1;                 \
            p = ((const type *)(t)->p_addr)[blk % (t)->p_mod];                              \
        }                                                                                   \
        BODY;                                                                               \
        i0 = i1;                                                                            \
    }

/* floor and ceil without libm calls (baseline x86-64 has no rounding instruction, so floorf is
 * a call per element and the loop cannot vectorize). Exact: below 2^23 (2^52) in magnitude the
 * truncation is exact and corrected by one; above, every value is an integer; NaN and inf pass
 * through; the sign of a zero result is z's, as floorf/ceilf give it. */
static inline float floor_f(float z)
{
    const float t = copysignf((float)(int32_t)z, z);
    const float f = t > z ? t - 1.0f : t;
    return fabsf(z) < 8388608.0f ? f : z;
}
static inline float ceil_f(float z)
{
    const float t = copysignf((float)(int32_t)z, z);
    const float c = t < z ? t + 1.0f : t;
    return fabsf(z) < 8388608.0f ? c : z;
}
static inline double floor_d(double z)
{
    const double t = copysign((double)(int64_t)z, z);
    const double f = t > z ? t - 1.0 : t;
    return fabs(z) < 4503599627370496.0 ? f : z;
}
static inline double ceil_d(double z)
{
    const double t = copysign((double)(int64_t)z, z);
    const double c = t < z ? t + 1.0 : t;
    return fabs(z) < 4503599627370496.0 ? c : z;
}

/* Division by a power of two k (L or T here) is exact scaling, the same as multiplying by the
 * exact 1/k: both are the correctly rounded value of one real number. Other k divide. */
#define POW2(k) ((k) > 0 && (((k) & ((k) - 1)) == 0))

/* One rounding's loop: Q is an expression of z. */
#define QUANT_LOOP(type, Q)                                                                \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                 \
        type z = x[i] * L;                                                                 \
        z = z / p;                                                                         \
        z = Q;                                                                             \
        z = z < 0 ? (type)0 : z;                                                           \
        z = z > L ? L : z;                                                                 \
        z = z != z ? (type)0 : z; /* NaN -> level 0 */                                     \
        out[i] = pow2 ? (z * p) * inv : (z * p) / L;                                       \
    }

#define QUANT_RELU(type, FLOOR, CEIL)                                                      \
    static void quant_relu_##type(const task *t)                                           \
    {                                                                                      \
        const type *x = (const type *)t->x;                                                \
        type *out = (type *)t->out;                                                        \
        const type L = (type)t->levels, inv = (type)1 / L;                                 \
        const int r = t->rounding, pow2 = POW2(t->levels);                                 \
        SEGMENTS(type, t, {                                                                \
            if (r == 0) {                                                                  \
                QUANT_LOOP(type, FLOOR(z))                                                 \
            } else if (r == 1) {                                                           \
                QUANT_LOOP(type, FLOOR(z + (type)0.5))                                     \
            } else {                                                                       \
                QUANT_LOOP(type, CEIL(z))                                                  \
            }                                                                              \
        })                                                                                 \
    }

QUANT_RELU(float, floor_f, ceil_f)
QUANT_RELU(double, floor_d, ceil_d)

/* QuantReLU's backward (ops/quant_relu/fused.py): with q = Q(x*L/gamma) and in = [0 < q < L],
 * g_x = in ? g : 0 and the per-element gamma term g * (clip(q, 0, L)/L - (in ? x/gamma : 0)),
 * NaN levels as 0; x/gamma is taken as (x*L/gamma)/L (equal up to rounding, one division
 * less). Either output may be absent (address 0). */
#define QUANT_BACK_LOOP(type, Q)                                                           \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                  \
        type z = x[i] * L;                                                                 \
        z = z / p;                                                                         \
        const type xg = pow2 ? z * inv : z / L; /* x/gamma up to rounding */             \
        z = Q;                                                                             \
        const int in = z > 0 && z < L;                                                     \
        if (g_x)                                                                           \
            g_x[i] = in ? g[i] : (type)0;                                                  \
        if (g_g) {                                                                         \
            type m = z < 0 ? (type)0 : z;                                                  \
            m = m > L ? L : m;                                                             \
            m = m != m ? (type)0 : m;                                                      \
            g_g[i] = ((pow2 ? m * inv : m / L) - (in ? xg : (type)0)) * g[i];              \
        }                                                                                  \
    }

#define QUANT_RELU_BACKWARD(type, FLOOR, CEIL)                                             \
    static void quant_relu_backward_##type(const task *t)                                  \
    {                                                                                      \
        const type *x = (const type *)t->x, *g = (const type *)t->g_spike;                 \
        type *g_x = (type *)t->g_x, *g_g = (type *)t->g_th;                                \
        const type L = (type)t->levels, inv = (type)1 / L;                                 \
        const int r = t->rounding, pow2 = POW2(t->levels);                                 \
        SEGMENTS(type, t, {                                                                \
            if (r == 0) {                                                                  \
                QUANT_BACK_LOOP(type, FLOOR(z))                                            \
            } else if (r == 1) {                                                           \
                QUANT_BACK_LOOP(type, FLOOR(z + (type)0.5))                                \
            } else {                                                                       \
                QUANT_BACK_LOOP(type, CEIL(z))                                             \
            }                                                                              \
        })                                                                                 \
    }

QUANT_RELU_BACKWARD(float, floor_f, ceil_f)
QUANT_RELU_BACKWARD(double, floor_d, ceil_d)

/* Neurons per block: the block's V (and expected current) stay in L1 over the T steps, and
 * the inner loops over a block vectorize. */
#define BLK 512

#define IF_FORWARD(type)                                                                    \
    static void if_forward_##type(const task *t)                                            \
    {                                                                                       \
        const type *x = (const type *)t->x;                                                 \
        type *spike = (type *)t->spike, *v = (type *)t->v, *v_seq = (type *)t->v_seq;       \
        type *h = (type *)t->h;                                                             \
        const ptrdiff_t N = t->n, ts = t->x_tstride;                                       \
        const int T = t->T, strict = t->strict, mean = t->expected && ts != 0;              \
        const int constant = t->expected || ts == 0;                                        \
        const type Tf = (type)T;                                                            \
        type qbuf[BLK], rbuf[BLK];                                                          \
        SEGMENTS(type, t, {                                                                 \
            for (ptrdiff_t b = i0; b < i1; b += BLK) {                                     \
                const ptrdiff_t m = i1 - b < BLK ? i1 - b : BLK;                           \
                type *vb = v + b;                                                           \
                const type *q = x + b;                                                      \
                if (mean) {                                                                 \
                    /* functional.expected_current: offset x_0, or 0 where x_0 is infinite */ \
                    for (ptrdiff_t j = 0; j < m; j++) {                                    \
                        const type d = q[j] - q[j];  /* 0, or NaN for inf and NaN */       \
                        rbuf[j] = d == d ? q[j] : 0;                                        \
                        qbuf[j] = q[j] - rbuf[j];                                           \
                    }                                                                       \
                    for (int k = 1; k < T; k++) {                                           \
                        const type *xk = x + (ptrdiff_t)k * ts + b;                        \
                        for (ptrdiff_t j = 0; j < m; j++)                                  \
                            qbuf[j] = qbuf[j] + (xk[j] - rbuf[j]);                          \
                    }                                                                       \
                    for (ptrdiff_t j = 0; j < m; j++)                                      \
                        qbuf[j] = rbuf[j] + qbuf[j] / Tf;                                   \
                    q = qbuf;                                                               \
                }                                                                           \
                for (int k = 0; k < T; k++) {                                               \
                    const type *qk = constant ? q : x + (ptrdiff_t)k * ts + b;             \
                    type *sk = spike + (ptrdiff_t)k * N + b;                               \
                    if (h) {                                                                \
                        type *hk = h + (ptrdiff_t)k * N + b;                               \
                        for (ptrdiff_t j = 0; j < m; j++) {                                \
                            const type u = vb[j] + qk[j];                                   \
                            const type hh = u - p;                                          \
                            const type s = (type)(strict ? hh > 0 : hh >= 0);               \
                            hk[j] = hh;                                                     \
                            sk[j] = s;                                                      \
                            vb[j] = u - s * p;                                              \
                        }                                                                   \
                    } else if (strict) {                                                           \
                        for (ptrdiff_t j = 0; j < m; j++) {                                \
                            const type u = vb[j] + qk[j];                                   \
                            const type s = (type)(u > p);                                   \
                            sk[j] = s;                                                      \
                            vb[j] = u - s * p;                                              \
                        }                                                                   \
                    } else {                                                                \
                        for (ptrdiff_t j = 0; j < m; j++) {                                \
                            const type u = vb[j] + qk[j];                                   \
                            const type s = (type)(u >= p);                                  \
                            sk[j] = s;                                                      \
                            vb[j] = u - s * p;                                              \
                        }                                                                   \
                    }                                                                       \
                    if (v_seq) {                                                            \
                        type *vs = v_seq + (ptrdiff_t)k * N + b;                           \
                        for (ptrdiff_t j = 0; j < m; j++)                                  \
                            vs[j] = vb[j];                                                  \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        })                                                                                  \
    }

IF_FORWARD(float)
IF_FORWARD(double)

#define SPIKE_RATE(type)                                                                    \
    static void spike_rate_##type(const task *t)                                            \
    {                                                                                       \
        const type *spike = (const type *)t->spike;                                         \
        type *out = (type *)t->out;                                                         \
        const ptrdiff_t N = t->n;                                                          \
        const type Tf = (type)t->T, inv = (type)1 / Tf;                                     \
        const int pow2 = POW2(t->T);                                                        \
        SEGMENTS(type, t, {                                                                 \
            for (ptrdiff_t b = i0; b < i1; b += BLK) {                                     \
                const ptrdiff_t m = i1 - b < BLK ? i1 - b : BLK;                           \
                type *ob = out + b;                                                         \
                for (ptrdiff_t j = 0; j < m; j++)                                          \
                    ob[j] = spike[b + j];                                                   \
                for (int k = 1; k < t->T; k++) {                                            \
                    const type *sk = spike + (ptrdiff_t)k * N + b;                         \
                    for (ptrdiff_t j = 0; j < m; j++)                                      \
                        ob[j] = ob[j] + sk[j];                                              \
                }                                                                           \
                for (ptrdiff_t j = 0; j < m; j++)                                          \
                    ob[j] = pow2 ? (ob[j] * p) * inv : (ob[j] * p) / Tf;                    \
            }                                                                               \
        })                                                                                  \
    }

SPIKE_RATE(float)
SPIKE_RATE(double)

/* if_backward: BPTT through T soft-reset steps from h_t = U_t - theta (ops/if_loop/bptt.py):
 *   g_V += g_v_seq_t (when given: V_t is v_seq[t] too)
 *   g_s = g_spike_t - theta * g_V  (no reset term if detach);  g_h = sg'(h_t) * g_s
 *   g_theta -= g_h + g_V * s_t;    g_V <- g_V + g_h;   g_x_t = g_V
 * and in expected mode every g_x_t is their mean. g_spike, g_v, g_v_seq may be absent (0); g_v0 and g_th
 * (per neuron) are written when present. sg' per surrogates.py: id 0 sigmoid (p0 = alpha),
 * id 1 atan (p0 / (1 + (p1 x)^2)), evaluated at -h for the strict rule, as the CUDA kernel. */
#define IF_BACKWARD(type, EXP)                                                              \
    static void if_backward_##type(const task *t)                                           \
    {                                                                                       \
        const type *h = (const type *)t->h, *g_spike = (const type *)t->g_spike;            \
        const type *g_v = (const type *)t->g_v, *g_vs = (const type *)t->g_v_seq;           \
        type *g_x = (type *)t->g_x, *g_v0 = (type *)t->g_v0, *g_th = (type *)t->g_th;       \
        const ptrdiff_t N = t->n;                                                          \
        const int T = t->T, strict = t->strict, detach = t->detach, atan_sg = t->sg_id == 1; \
        const type p0 = (type)t->sg_p0, p1 = (type)t->sg_p1, Tf = (type)t->T;              \
        type gv[BLK], gth[BLK];                                                             \
        SEGMENTS(type, t, {                                                                 \
            for (ptrdiff_t b = i0; b < i1; b += BLK) {                                     \
                const ptrdiff_t m = i1 - b < BLK ? i1 - b : BLK;                           \
                for (ptrdiff_t j = 0; j < m; j++) {                                        \
                    gv[j] = g_v ? g_v[b + j] : (type)0;                                     \
                    gth[j] = 0;                                                             \
                }                                                                           \
                for (int k = T - 1; k >= 0; k--) {                                          \
                    const type *hk = h + (ptrdiff_t)k * N + b;                             \
                    const type *gk = g_spike ? g_spike + (ptrdiff_t)k * N + b : NULL;      \
                    type *xk = g_x + (ptrdiff_t)k * N + b;                                 \
                    if (g_vs) {                                                             \
                        const type *vk = g_vs + (ptrdiff_t)k * N + b;                      \
                        for (ptrdiff_t j = 0; j < m; j++)                                  \
                            gv[j] = gv[j] + vk[j];                                          \
                    }                                                                       \
                    for (ptrdiff_t j = 0; j < m; j++) {                                    \
                        const type hh = hk[j];                                              \
                        const type s = (type)(strict ? hh > 0 : hh >= 0);                   \
                        type gs = gk ? gk[j] : (type)0;                                     \
                        if (!detach)                                                        \
                            gs = gs - p * gv[j];                                            \
                        const type xs = strict ? -hh : hh;                                  \
                        type d;                                                             \
                        if (atan_sg) {                                                      \
                            const type ax = p1 * xs;                                        \
                            d = p0 / ((type)1 + ax * ax) * gs;                              \
                        } else {                                                            \
                            const type sg = (type)1 / ((type)1 + EXP(-(xs * p0)));          \
                            d = gs * ((type)1 - sg) * sg * p0;                              \
                        }                                                                   \
                        gth[j] = gth[j] - (d + gv[j] * s);                                  \
                        gv[j] = gv[j] + d;                                                  \
                        xk[j] = gv[j];                                                      \
                    }                                                                       \
                }                                                                           \
                if (t->expected) {                                                          \
                    for (ptrdiff_t j = 0; j < m; j++) {                                    \
                        type acc = 0;                                                       \
                        for (int k = 0; k < T; k++)                                         \
                            acc = acc + g_x[(ptrdiff_t)k * N + b + j];                     \
                        acc = acc / Tf;                                                     \
                        for (int k = 0; k < T; k++)                                         \
                            g_x[(ptrdiff_t)k * N + b + j] = acc;                           \
                    }                                                                       \
                }                                                                           \
                for (ptrdiff_t j = 0; j < m; j++) {                                        \
                    if (g_v0)                                                               \
                        g_v0[b + j] = gv[j];                                                \
                    if (g_th)                                                               \
                        g_th[b + j] = gth[j];                                               \
                }                                                                           \
            }                                                                               \
        })                                                                                  \
    }

IF_BACKWARD(float, expf)
IF_BACKWARD(double, exp)

#define IF_RATE(type)                                                                       \
    static void if_rate_##type(const task *t)                                               \
    {                                                                                       \
        const type *x = (const type *)t->x;                                                 \
        type *v = (type *)t->v, *out = (type *)t->out;                                      \
        const int T = t->T, strict = t->strict, pow2 = POW2(t->T);                          \
        const type Tf = (type)T, inv = (type)1 / Tf;                                        \
        type cnt[BLK];                                                                      \
        SEGMENTS(type, t, {                                                                 \
            for (ptrdiff_t b = i0; b < i1; b += BLK) {                                     \
                const ptrdiff_t m = i1 - b < BLK ? i1 - b : BLK;                           \
                type *vb = v + b;                                                           \
                const type *q = x + b;                                                      \
                for (ptrdiff_t j = 0; j < m; j++)                                          \
                    cnt[j] = 0;                                                             \
                for (int k = 0; k < T; k++) {                                               \
                    if (strict) {                                                           \
                        for (ptrdiff_t j = 0; j < m; j++) {                                \
                            const type u = vb[j] + q[j];                                    \
                            const type s = (type)(u > p);                                   \
                            cnt[j] = cnt[j] + s;                                            \
                            vb[j] = u - s * p;                                              \
                        }                                                                   \
                    } else {                                                                \
                        for (ptrdiff_t j = 0; j < m; j++) {                                \
                            const type u = vb[j] + q[j];                                    \
                            const type s = (type)(u >= p);                                  \
                            cnt[j] = cnt[j] + s;                                            \
                            vb[j] = u - s * p;                                              \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
                for (ptrdiff_t j = 0; j < m; j++)                                          \
                    out[b + j] = pow2 ? (cnt[j] * p) * inv : (cnt[j] * p) / Tf;             \
            }                                                                               \
        })                                                                                  \
    }

IF_RATE(float)
IF_RATE(double)


#endif /* SJ_QVM_CPU_KERNELS_H */
