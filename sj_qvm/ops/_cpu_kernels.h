/* The kernels of sj_qvm/ops/_cpu.c (see the contract there): the task one thread runs, and the
 * loops. Included once, by _cpu.c; no Python API here. */
#ifndef SJ_QVM_CPU_KERNELS_H
#define SJ_QVM_CPU_KERNELS_H

#include <stdint.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include "if_loop/qvm_enums.h"

typedef struct {
    uintptr_t x, out, spike, v, v_seq, h, g_spike, g_v, g_v_seq, g_x, g_v0, g_th, p_addr, v0_addr;
    double p_value, v0_value;
    ptrdiff_t p_div, p_mod, x_tstride, n, begin, end, levels, v0_div, v0_mod;
    int v0_fill;
    int T, rounding, strict, expected, dtype, kind, detach, sg_id, part;
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

/* Division by a power of two k (L or T here) is exact scaling, the same as multiplying by the
 * exact 1/k: both are the correctly rounded value of one real number. Other k divide. */
#define POW2(k) ((k) > 0 && (((k) & ((k) - 1)) == 0))

/* Neurons per block: the block's V (and expected current) stay in L1 over the T steps, and
 * the inner loops over a block vectorize. */
#define BLK 512

/* The h_t buffer of a recomputing if_backward: T * (neurons per block) <= RECOMPUTE, so
 * T <= RECOMPUTE / 8 keeps blocks of 8 neurons at least (if_backward refuses a larger T). */
#define RECOMPUTE 16384

/* The AVX2 builds of the kernels (the same source, 8 floats a vector, SSE4.1 rounding):
 * _cpu.c picks them at run time where the CPU has AVX2. IEEE arithmetic gives the same values
 * at any vector width, and -ffp-contract=off keeps FMA out, so both builds are bit-identical. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define AVX2 __attribute__((target("avx2")))
#define HAVE_AVX2 1
#else
#define AVX2
#define HAVE_AVX2 0
#endif

#include "_cpu_quant.h"

/* The expected current of the [m] neurons from b (functional.expected_current), into qbuf:
 * q = r + (sum_{t>=0} (x_t - r)) / T with the offset r = x_0, or 0 where x_0 is infinite (rbuf),
 * summed in time order. Reads x, ts, T, Tf, b, m and q (= x + b); one home for if_forward and
 * the recomputing if_backward, so that both see the same bits. */
#define EXPECTED_MEAN(type)                                                                 \
    for (ptrdiff_t j = 0; j < m; j++) {                                                    \
        const type d = q[j] - q[j]; /* 0, or NaN for inf and NaN */                        \
        rbuf[j] = d == d ? q[j] : 0;                                                        \
        qbuf[j] = q[j] - rbuf[j];                                                           \
    }                                                                                       \
    for (int k = 1; k < T; k++) {                                                           \
        const type *xk = x + (ptrdiff_t)k * ts + b;                                        \
        for (ptrdiff_t j = 0; j < m; j++)                                                  \
            qbuf[j] = qbuf[j] + (xk[j] - rbuf[j]);                                          \
    }                                                                                       \
    for (ptrdiff_t j = 0; j < m; j++)                                                      \
        qbuf[j] = rbuf[j] + qbuf[j] / Tf;

/* Where t->v0_fill is set, the block's V_0 is written into vb [m] here (V_0 in the index form of
 * a parameter: v0_value, or v0_addr[(i / v0_div) % v0_mod] for neuron i), so that the caller
 * need not fill v in a pass of its own. Reads t, b, m and N. */
#define FILL_V0(type)                                                                       \
    if (t->v0_fill) {                                                                       \
        const type *v0p = (const type *)t->v0_addr;                                         \
        if (!v0p) {                                                                         \
            const type v0s = (type)t->v0_value;                                             \
            for (ptrdiff_t j = 0; j < m; j++)                                              \
                vb[j] = v0s;                                                                \
        } else if (t->v0_div == 1 && t->v0_mod >= N) { /* one value per neuron */           \
            for (ptrdiff_t j = 0; j < m; j++)                                              \
                vb[j] = v0p[b + j];                                                         \
        } else {                                                                            \
            for (ptrdiff_t j = 0; j < m;) { /* runs of one value */                         \
                const ptrdiff_t blk = (b + j) / t->v0_div;                                 \
                const ptrdiff_t end = (blk + 1) * t->v0_div - b;                           \
                const type val = v0p[blk % t->v0_mod];                                      \
                for (; j < (end < m ? end : m); j++)                                        \
                    vb[j] = val;                                                            \
            }                                                                               \
        }                                                                                   \
    }

#define IF_FORWARD(name, type, ATTR)                                                               \
    ATTR static void if_forward_##name(const task *t)                                            \
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
                FILL_V0(type)                                                               \
                if (mean) {                                                                 \
                    EXPECTED_MEAN(type)                                                     \
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

IF_FORWARD(float, float, )
IF_FORWARD(double, double, )
IF_FORWARD(float_avx2, float, AVX2)
IF_FORWARD(double_avx2, double, AVX2)

#define SPIKE_RATE(name, type, ATTR)                                                               \
    ATTR static void spike_rate_##name(const task *t)                                            \
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

SPIKE_RATE(float, float, )
SPIKE_RATE(double, double, )
SPIKE_RATE(float_avx2, float, AVX2)
SPIKE_RATE(double_avx2, double, AVX2)

/* e^a for float a in [-80, 80], without libm, so that the loops around it vectorize:
 * a = n ln2 + f with n = round(a / ln2) (given, rounded by the caller's build) and |f| <= ln2/2,
 * ln2 split in two so that n * hi is exact; e^f by its Taylor series to f^7 (truncation below
 * 3e-8 relative); 2^n from the exponent bits. */
static inline float exp_poly(float a, float n)
{
    const float f = (a - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.0f / 5040.0f;
    p = p * f + 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    const int32_t bits = ((int32_t)n + 127) * 8388608; /* (n + 127) << 23 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* 1 / (1 + e^a): a clamped to [-80, 80] for exp_poly; above 80 the result is 0 (libm's
 * sigmoid gives below 2e-35 there, and 0 once e^a overflows); NaN stays NaN. */
#define SIGMOID_OF(FLOOR, a)                                                                \
    const float ac = a < -80.0f ? -80.0f : (a > 80.0f ? 80.0f : a);                         \
    const float s = 1.0f / (1.0f + exp_poly(ac, FLOOR(ac * 1.44269504f + 0.5f)));           \
    return a > 80.0f ? 0.0f : s;
static inline float sigmoid_of_f(float a) { SIGMOID_OF(floor_f, a) }
AVX2 static inline float sigmoid_of_f_avx2(float a) { SIGMOID_OF(__builtin_floorf, a) }
static inline double sigmoid_of_d(double a) { return 1.0 / (1.0 + exp(a)); }

/* if_backward: BPTT through T soft-reset steps from h_t = U_t - theta (ops/if_loop/torch.py):
 *   g_V += g_v_seq_t (when given: V_t is v_seq[t] too)
 *   g_s = g_spike_t - theta * g_V  (no reset term if detach);  g_h = sg'(h_t) * g_s
 *   g_theta -= g_h + g_V * s_t;    g_V <- g_V + g_h;   g_x_t = g_V
 * and in expected mode every g_x_t is their mean. h_t is read from h [T, n], or, where h is
 * absent (0), recomputed per block by if_forward's loop from x (x_tstride) and V_0 in t->v.
 * g_spike, g_v, g_v_seq may be absent (0); g_v0 and g_th
 * (per neuron) are written when present. sg' per surrogates.py: id 0 sigmoid (p0 = alpha),
 * id 1 atan (p0 / (1 + (p1 x)^2)), evaluated at -h for the strict rule, as the CUDA kernel.
 * The float builds take the sigmoid from exp_poly (vectorizable, both builds the same bits). */
/* One backward step over a block, for one surrogate (ATAN 1: atan, 0: sigmoid) and reset rule
 * (DETACH): no branch left inside, so that the loop vectorizes. */
#define BACK_STEP(type, SIGMOID, ATAN, DETACH)                                              \
    for (ptrdiff_t j = 0; j < m; j++) {                                                    \
        const type hh = hk[j];                                                              \
        const type s = (type)(strict ? hh > 0 : hh >= 0);                                   \
        type gs = gk[j];                                                                    \
        if (!DETACH)                                                                        \
            gs = gs - p * gv[j];                                                            \
        const type xs = strict ? -hh : hh;                                                  \
        type d;                                                                             \
        if (ATAN) {                                                                         \
            const type ax = p1 * xs;                                                        \
            d = p0 / ((type)1 + ax * ax) * gs;                                              \
        } else {                                                                            \
            const type sg = SIGMOID(-(xs * p0));                                            \
            d = gs * ((type)1 - sg) * sg * p0;                                              \
        }                                                                                   \
        gth[j] = gth[j] - (d + gv[j] * s);                                                  \
        gv[j] = gv[j] + d;                                                                  \
        xk[j] = gv[j];                                                                      \
    }

#define IF_BACKWARD(name, type, SIGMOID, ATTR)                                              \
    ATTR static void if_backward_##name(const task *t)                                      \
    {                                                                                       \
        const type *h = (const type *)t->h, *g_spike = (const type *)t->g_spike;            \
        const type *g_v = (const type *)t->g_v, *g_vs = (const type *)t->g_v_seq;           \
        type *g_x = (type *)t->g_x, *g_v0 = (type *)t->g_v0, *g_th = (type *)t->g_th;       \
        const type *x = (const type *)t->x, *v0 = (const type *)t->v;                       \
        const ptrdiff_t N = t->n, ts = t->x_tstride;                                       \
        const int T = t->T, strict = t->strict, detach = t->detach, atan_sg = t->sg_id == SG_ATAN; \
        const int recompute = h == NULL, mean = t->expected && ts != 0;                     \
        const int constant = t->expected || ts == 0;                                        \
        const ptrdiff_t step = recompute && RECOMPUTE / T < BLK ? RECOMPUTE / T : BLK;     \
        const type p0 = (type)t->sg_p0, p1 = (type)t->sg_p1, Tf = (type)t->T;              \
        type gv[BLK], gth[BLK], zeros[BLK], zacc[BLK], qbuf[BLK], rbuf[BLK], vv[BLK];       \
        type hb[RECOMPUTE];                                                                 \
        for (ptrdiff_t j = 0; j < BLK; j++)                                                 \
            zeros[j] = 0; /* g_spike_t when there is none */                                \
        SEGMENTS(type, t, {                                                                 \
            for (ptrdiff_t b = i0; b < i1; b += step) {                                    \
                const ptrdiff_t m = i1 - b < step ? i1 - b : step;                         \
                if (recompute) { /* if_forward's h_t for this block, into hb [T, m] */      \
                    const type *q = x + b;                                                  \
                    if (mean) {                                                             \
                        EXPECTED_MEAN(type)                                                 \
                        q = qbuf;                                                           \
                    }                                                                       \
                    for (ptrdiff_t j = 0; j < m; j++)                                      \
                        vv[j] = v0[b + j];                                                  \
                    for (int k = 0; k < T; k++) {                                           \
                        const type *qk = constant ? q : x + (ptrdiff_t)k * ts + b;         \
                        type *hk = hb + (ptrdiff_t)k * m;                                  \
                        for (ptrdiff_t j = 0; j < m; j++) {                                \
                            const type u = vv[j] + qk[j];                                   \
                            const type hh = u - p;                                          \
                            const type s = (type)(strict ? hh > 0 : hh >= 0);               \
                            hk[j] = hh;                                                     \
                            vv[j] = u - s * p;                                              \
                        }                                                                   \
                    }                                                                       \
                }                                                                           \
                for (ptrdiff_t j = 0; j < m; j++) {                                        \
                    gv[j] = g_v ? g_v[b + j] : (type)0;                                     \
                    gth[j] = 0;                                                             \
                }                                                                           \
                for (int k = T - 1; k >= 0; k--) {                                          \
                    const type *hk = recompute ? hb + (ptrdiff_t)k * m                     \
                                               : h + (ptrdiff_t)k * N + b;                 \
                    type *xk = g_x + (ptrdiff_t)k * N + b;                                 \
                    if (g_vs) {                                                             \
                        const type *vk = g_vs + (ptrdiff_t)k * N + b;                      \
                        for (ptrdiff_t j = 0; j < m; j++)                                  \
                            gv[j] = gv[j] + vk[j];                                          \
                    }                                                                       \
                    const type *gk = g_spike ? g_spike + (ptrdiff_t)k * N + b : zeros;     \
                    if (atan_sg) {                                                          \
                        if (detach)                                                         \
                            BACK_STEP(type, SIGMOID, 1, 1)                                  \
                        else                                                                \
                            BACK_STEP(type, SIGMOID, 1, 0)                                  \
                    } else {                                                                \
                        if (detach)                                                         \
                            BACK_STEP(type, SIGMOID, 0, 1)                                  \
                        else                                                                \
                            BACK_STEP(type, SIGMOID, 0, 0)                                  \
                    }                                                                       \
                }                                                                           \
                if (t->expected) { /* every g_x_t is their mean, summed in time order */    \
                    for (ptrdiff_t j = 0; j < m; j++)                                      \
                        zacc[j] = g_x[b + j];                                               \
                    for (int k = 1; k < T; k++) {                                           \
                        const type *xk = g_x + (ptrdiff_t)k * N + b;                       \
                        for (ptrdiff_t j = 0; j < m; j++)                                  \
                            zacc[j] = zacc[j] + xk[j];                                      \
                    }                                                                       \
                    for (ptrdiff_t j = 0; j < m; j++)                                      \
                        zacc[j] = zacc[j] / Tf;                                             \
                    for (int k = 0; k < T; k++) {                                           \
                        type *xk = g_x + (ptrdiff_t)k * N + b;                             \
                        for (ptrdiff_t j = 0; j < m; j++)                                  \
                            xk[j] = zacc[j];                                                \
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

IF_BACKWARD(float, float, sigmoid_of_f, )
IF_BACKWARD(double, double, sigmoid_of_d, )
IF_BACKWARD(float_avx2, float, sigmoid_of_f_avx2, AVX2)
IF_BACKWARD(double_avx2, double, sigmoid_of_d, AVX2)

#define IF_RATE(name, type, ATTR)                                                                  \
    ATTR static void if_rate_##name(const task *t)                                               \
    {                                                                                       \
        const type *x = (const type *)t->x;                                                 \
        type *v = (type *)t->v, *out = (type *)t->out;                                      \
        const ptrdiff_t N = t->n;                                                          \
        const int T = t->T, strict = t->strict, pow2 = POW2(t->T);                          \
        const type Tf = (type)T, inv = (type)1 / Tf;                                        \
        type cnt[BLK];                                                                      \
        SEGMENTS(type, t, {                                                                 \
            for (ptrdiff_t b = i0; b < i1; b += BLK) {                                     \
                const ptrdiff_t m = i1 - b < BLK ? i1 - b : BLK;                           \
                type *vb = v + b;                                                           \
                const type *q = x + b;                                                      \
                FILL_V0(type)                                                               \
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

IF_RATE(float, float, )
IF_RATE(double, double, )
IF_RATE(float_avx2, float, AVX2)
IF_RATE(double_avx2, double, AVX2)


#endif /* SJ_QVM_CPU_KERNELS_H */
