/* QuantReLU's kernels for sj_qvm/ops/_cpu.c (see the contract there): the forward and the STE
 * backward, each in a baseline (SSE2) and an AVX2 build of the same source. Included once, by
 * _cpu_kernels.h, after `task`, SEGMENTS, POW2, BLK and AVX2 are defined; no Python API here. */
#ifndef SJ_QVM_CPU_QUANT_H
#define SJ_QVM_CPU_QUANT_H

/* floor and ceil without libm calls (baseline x86-64 has no rounding instruction, so floorf is
 * a call per element and the loop cannot vectorize). Exact: below 2^23 (2^52) in magnitude the
 * truncation is exact and corrected by one; above, every value is an integer; NaN and inf pass
 * through; the sign of a zero result is z's, as floorf/ceilf give it. The AVX2 builds use
 * __builtin_floor/ceil, one rounding instruction (SSE4.1), the same values. */
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

/* One rounding's loop: Q is an expression of z; BY_L(y) is y / L (y * (1/L) for L = 2^k: the
 * same value). Each loop has one form of it, so that no lane computes both. */
#define QUANT_LOOP_BY(type, Q, BY_L)                                                       \
    for (ptrdiff_t i = i0; i < i1; i++) {                                                 \
        type z = x[i] * L;                                                                 \
        z = z / p;                                                                         \
        z = Q;                                                                             \
        z = z < 0 ? (type)0 : z;                                                           \
        z = z > L ? L : z;                                                                 \
        z = z != z ? (type)0 : z; /* NaN -> level 0 */                                     \
        out[i] = BY_L(z * p);                                                              \
    }
#define MUL_INV(y) ((y) * inv)
#define DIV_L(y) ((y) / L)
#define QUANT_LOOP(type, Q)                                                                \
    if (pow2) {                                                                            \
        QUANT_LOOP_BY(type, Q, MUL_INV)                                                    \
    } else {                                                                               \
        QUANT_LOOP_BY(type, Q, DIV_L)                                                      \
    }

#define QUANT_RELU(name, type, FLOOR, CEIL, ATTR)                                          \
    ATTR static void quant_relu_##name(const task *t)                                      \
    {                                                                                      \
        const type *__restrict x = (const type *)t->x; /* out is a fresh tensor */        \
        type *__restrict out = (type *)t->out;                                             \
        const type L = (type)t->levels, inv = (type)1 / L;                                 \
        const int r = t->rounding, pow2 = POW2(t->levels);                                 \
        SEGMENTS(type, t, {                                                                \
            if (r == ROUND_FLOOR) {                                                        \
                QUANT_LOOP(type, FLOOR(z))                                                 \
            } else if (r == ROUND_HALF_UP) {                                               \
                QUANT_LOOP(type, FLOOR(z + (type)0.5))                                     \
            } else {                                                                       \
                QUANT_LOOP(type, CEIL(z))                                                  \
            }                                                                              \
        })                                                                                 \
    }

QUANT_RELU(float, float, floor_f, ceil_f, )
QUANT_RELU(double, double, floor_d, ceil_d, )
QUANT_RELU(float_avx2, float, __builtin_floorf, __builtin_ceilf, AVX2)
QUANT_RELU(double_avx2, double, __builtin_floor, __builtin_ceil, AVX2)

/* QuantReLU's backward (ops/quant_relu/torch.py): with q = Q(x*L/gamma) and in = [0 < q < L],
 * g_x = in ? g : 0, and dL/dgamma = the sum of g * (clip(q, 0, L)/L - (in ? x/gamma : 0)) (NaN
 * levels as 0) over the elements of each gamma value, accumulated in double: the thread of
 * share `part` adds its sums to g_acc[part * mod + (i / div) % mod] (a zeroed [threads, mod]
 * float64 buffer; the caller adds the rows). x/gamma is taken as (x*L/gamma)/L (equal up to
 * rounding, one division less). Branch-free, so that the loops vectorize: a random g makes
 * `in` unpredictable. WX, WG: whether g_x, g_acc are wanted (compile-time 0/1). */
#define QUANT_BACK_BLOCK_BY(type, Q, WX, WG, BY_L)                                         \
    for (ptrdiff_t j = 0; j < m; j++) {                                                    \
        type z = xb[j] * L;                                                                \
        z = z / p;                                                                         \
        const type xg = BY_L(z);                                                           \
        z = Q;                                                                             \
        const int in = (z > 0) & (z < L);                                                  \
        const type gj = gb[j]; /* loaded either way, so that the select vectorizes */      \
        if (WX)                                                                            \
            gxb[j] = in ? gj : (type)0;                                                    \
        if (WG) {                                                                          \
            type mm = z < 0 ? (type)0 : z;                                                 \
            mm = mm > L ? L : mm;                                                          \
            mm = mm != mm ? (type)0 : mm;                                                  \
            tb[j] = (BY_L(mm) - (in ? xg : (type)0)) * gj;                                 \
        }                                                                                  \
    }
#define QUANT_BACK_BLOCK(type, Q, WX, WG)                                                  \
    if (pow2) {                                                                            \
        QUANT_BACK_BLOCK_BY(type, Q, WX, WG, MUL_INV)                                      \
    } else {                                                                               \
        QUANT_BACK_BLOCK_BY(type, Q, WX, WG, DIV_L)                                        \
    }

/* Per block of BLK: the elementwise loop, then the gamma terms summed in 8 double lanes. */
#define QUANT_BACK_SEGMENT(type, Q, WX, WG)                                                \
    for (ptrdiff_t b = i0; b < i1; b += BLK) {                                             \
        const ptrdiff_t m = i1 - b < BLK ? i1 - b : BLK;                                   \
        const type *__restrict xb = x + b, *__restrict gb = g + b;                         \
        type *__restrict gxb = WX ? g_x + b : NULL;                                        \
        QUANT_BACK_BLOCK(type, Q, WX, WG)                                                  \
        if (WG) {                                                                          \
            ptrdiff_t j = 0;                                                               \
            for (; j + 8 <= m; j += 8)                                                     \
                for (int l = 0; l < 8; l++)                                                \
                    lane[l] = lane[l] + (double)tb[j + l];                                 \
            for (; j < m; j++)                                                             \
                lane[0] = lane[0] + (double)tb[j];                                         \
        }                                                                                  \
    }

#define QUANT_BACK_ROUNDINGS(type, FLOOR, CEIL, WX, WG)                                    \
    if (r == ROUND_FLOOR) {                                                                \
        QUANT_BACK_SEGMENT(type, FLOOR(z), WX, WG)                                         \
    } else if (r == ROUND_HALF_UP) {                                                       \
        QUANT_BACK_SEGMENT(type, FLOOR(z + (type)0.5), WX, WG)                             \
    } else {                                                                               \
        QUANT_BACK_SEGMENT(type, CEIL(z), WX, WG)                                          \
    }

#define QUANT_RELU_BACKWARD(name, type, FLOOR, CEIL, ATTR)                                 \
    ATTR static void quant_relu_backward_##name(const task *t)                             \
    {                                                                                      \
        const type *__restrict x = (const type *)t->x;                                     \
        const type *__restrict g = (const type *)t->g_spike;                               \
        type *__restrict g_x = (type *)t->g_x; /* a fresh tensor */                        \
        double *g_acc = (double *)t->g_th;                                                 \
        const type L = (type)t->levels, inv = (type)1 / L;                                 \
        const int r = t->rounding, pow2 = POW2(t->levels);                                 \
        type tb[BLK];                                                                      \
        double lane[8];                                                                    \
        SEGMENTS(type, t, {                                                                \
            for (int l = 0; l < 8; l++)                                                    \
                lane[l] = 0;                                                               \
            if (g_x && g_acc) {                                                            \
                QUANT_BACK_ROUNDINGS(type, FLOOR, CEIL, 1, 1)                              \
            } else if (g_x) {                                                              \
                QUANT_BACK_ROUNDINGS(type, FLOOR, CEIL, 1, 0)                              \
            } else if (g_acc) {                                                            \
                QUANT_BACK_ROUNDINGS(type, FLOOR, CEIL, 0, 1)                              \
            }                                                                              \
            if (g_acc) {                                                                   \
                const ptrdiff_t k = t->p_addr ? (i0 / t->p_div) % t->p_mod : 0;            \
                double s = 0;                                                              \
                for (int l = 0; l < 8; l++)                                                \
                    s = s + lane[l];                                                       \
                g_acc[(ptrdiff_t)t->part * t->p_mod + k] += s;                             \
            }                                                                              \
        })                                                                                 \
    }

QUANT_RELU_BACKWARD(float, float, floor_f, ceil_f, )
QUANT_RELU_BACKWARD(double, double, floor_d, ceil_d, )
QUANT_RELU_BACKWARD(float_avx2, float, __builtin_floorf, __builtin_ceilf, AVX2)
QUANT_RELU_BACKWARD(double_avx2, double, __builtin_floor, __builtin_ceil, AVX2)

#endif /* SJ_QVM_CPU_QUANT_H */
