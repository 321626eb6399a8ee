// Float storage and exact fp32 arithmetic for the IF kernels (if_loop.cuh includes it): 16-bit
// floats as raw bits with exact conversions, V lanes moved as one access, and fp32 add, sub,
// div and compare that keep subnormals whatever -ftz says. `__host__ __device__`, like
// if_loop.cuh, so tests/if_loop_host.cpp builds the same functions for the host.
#pragma once

#if defined(__CUDACC__)
#define QVM_HD __host__ __device__ __forceinline__
#else
#define QVM_HD inline
#endif

#if !defined(__CUDACC_RTC__)
#include <math.h>
#include <string.h>
#endif

namespace qvm {

// ---- storage types: 16-bit floats are raw bits; no CUDA headers are needed --------------------
struct half_t { unsigned short bits; };
struct bf16_t { unsigned short bits; };

QVM_HD float bits_to_float(unsigned int u) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
#endif
}

QVM_HD unsigned int float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
#endif
}

// IEEE binary16 <-> binary32. The device uses the hardware conversion; the host twin is exact
// too (round to nearest even), and tests compare it with torch over all 65536 half values.
QVM_HD float half_to_float(unsigned short h) {
#if defined(__CUDA_ARCH__)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const unsigned int sign = (unsigned int)(h & 0x8000u) << 16;
    unsigned int exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf, nan
    if (exp == 0) {
        if (mant == 0) return bits_to_float(sign);
        exp = 113;  // subnormal: normalize (127 - 15 + 1)
        while (!(mant & 0x400u)) { mant <<= 1; --exp; }
        return bits_to_float(sign | (exp << 23) | ((mant & 0x3ffu) << 13));
    }
    return bits_to_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

QVM_HD unsigned short float_to_half(float f) {
#if defined(__CUDA_ARCH__)
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    const unsigned int u = float_to_bits(f);
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
    const unsigned int a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u);  // nan
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to inf
    if (a < 0x38800000u) {  // half subnormal or zero: scale by 2^24 and round once
        const float scaled = bits_to_float(a) * 16777216.0f;  // exact
        // nearest-even to an integer: adding 2^23 rounds a value < 2^23 to an integer
        const float r = (scaled + 8388608.0f) - 8388608.0f;
        return (unsigned short)(sign | (unsigned short)r);
    }
    const unsigned int rounded = a + 0xfffu + ((a >> 13) & 1u);  // nearest even at bit 13
    return (unsigned short)(sign | ((rounded - 0x38000000u) >> 13));
#endif
}

QVM_HD float bf16_to_float(unsigned short b) { return bits_to_float((unsigned int)b << 16); }

QVM_HD unsigned short float_to_bf16(float f) {
    const unsigned int u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // quiet nan
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

template <class T> struct Io;
template <> struct Io<float> {
    static QVM_HD float load(float x) { return x; }
    static QVM_HD float store(float f) { return f; }
};
template <> struct Io<half_t> {
    static QVM_HD float load(half_t x) { return half_to_float(x.bits); }
    static QVM_HD half_t store(float f) { half_t h; h.bits = float_to_half(f); return h; }
};
template <> struct Io<bf16_t> {
    static QVM_HD float load(bf16_t x) { return bf16_to_float(x.bits); }
    static QVM_HD bf16_t store(float f) { bf16_t b; b.bits = float_to_bf16(f); return b; }
};
template <> struct Io<unsigned char> {  // bool / uint8 spikes
    // f != 0 (-0 included) without a float compare, which -ftz would compile with .ftz
    static QVM_HD unsigned char store(float f) {
        return (unsigned char)((float_to_bits(f) << 1) != 0u);
    }
};

// V elements moved as one access (16 bytes for V * sizeof(T) == 16).
template <class T, int V> struct alignas(sizeof(T) * V) Pack { T v[V]; };

template <class T, int V>
QVM_HD void load_lanes(const T* __restrict__ p, float (&out)[V]) {
    const Pack<T, V> pk = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = Io<T>::load(pk.v[i]);
}

template <int V>
QVM_HD void load_lanes_f32(const float* __restrict__ p, float (&out)[V]) {
    const Pack<float, V> pk = *reinterpret_cast<const Pack<float, V>*>(p);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = pk.v[i];
}

template <class T, int V>
QVM_HD void store_lanes(T* __restrict__ p, const float (&in)[V]) {
    Pack<T, V> pk;
#pragma unroll
    for (int i = 0; i < V; ++i) pk.v[i] = Io<T>::store(in[i]);
    *reinterpret_cast<Pack<T, V>*>(p) = pk;
}

// ---- exact fp32 arithmetic, whatever -ftz says ------------------------------------------------
// CuPy appends -ftz=true to our NVRTC options (NVRTC keeps the last value), which flushes the
// subnormal inputs and results of f32 add, sub, div and compare to zero: h = -1e-39 would become
// -0 and fire under h >= 0, where the CPU reference does not fire. So the forward's arithmetic,
// and the firing rule that the backward recomputes, are PTX without .ftz (IEEE, round to
// nearest even, subnormals kept), as on the CPU; the gradients' arithmetic follows -ftz.
// add_rn, sub_rn, div_rn: a op b, rounded to nearest even, subnormals kept.
#if defined(__CUDA_ARCH__)
#define QVM_EXACT(NAME, PTX, OP)                                                                  \
    QVM_HD float NAME(float a, float b) {                                                         \
        float r;                                                                                  \
        asm(PTX " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));                                       \
        return r;                                                                                 \
    }
#else
#define QVM_EXACT(NAME, PTX, OP) \
    QVM_HD float NAME(float a, float b) { return a OP b; }
#endif
QVM_EXACT(add_rn, "add.rn.f32", +)
QVM_EXACT(sub_rn, "sub.rn.f32", -)
QVM_EXACT(div_rn, "div.rn.f32", /)
#undef QVM_EXACT

QVM_HD bool is_inf(float f) { return (float_to_bits(f) & 0x7fffffffu) == 0x7f800000u; }

// s = h >= 0 (h > 0 when strict); NaN never fires.
QVM_HD bool fires(float h, bool strict) {
#if defined(__CUDA_ARCH__)
    unsigned int r;
    if (strict)
        asm("{ .reg .pred p; setp.gt.f32 p, %1, 0f00000000; selp.u32 %0, 1, 0, p; }"
            : "=r"(r) : "f"(h));
    else
        asm("{ .reg .pred p; setp.ge.f32 p, %1, 0f00000000; selp.u32 %0, 1, 0, p; }"
            : "=r"(r) : "f"(h));
    return r != 0;
#else
    return strict ? h > 0.0f : h >= 0.0f;
#endif
}

}  // namespace qvm
