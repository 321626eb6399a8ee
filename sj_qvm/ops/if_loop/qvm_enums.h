/* Every id and flag that crosses from Python into the kernels, in one header: the CUDA kernels
 * (if_loop.cuh) and the compiled CPU kernels (_cpu.c, _cpu_kernels.h, _cpu_quant.h) include it,
 * and sj_qvm/ops/enums.py reads its `enum { NAME = int }` entries for the Python side
 * (launch.py, surrogates.py, native.py, quant_relu/cpu.py). The CPU extension also exports the
 * values it was built with (_cpu.ENUMS), and enums.guard refuses an extension that disagrees. */
#pragma once

/* Forward flags of the CUDA kernels. */
enum {
    F_STRICT = 1,         /* fire on h > 0 instead of h >= 0 */
    F_EXPECTED = 2,       /* every step receives the mean current q */
    F_STORE_V_SEQ = 4,    /* write V_t for every t */
    F_STORE_H = 8,        /* write h_t for the backward pass (training) */
    F_THETA_TENSOR = 16,  /* theta read from an array, else theta_value */
    F_V0_TENSOR = 32,     /* V0 read from an array, else v0_value */
    F_CONSTANT = 2048     /* x is one [N] current, the same at every step (x_t = x_0) */
};
/* Backward flags of the CUDA kernels (F_STRICT, F_EXPECTED and F_THETA_TENSOR as above). */
enum {
    B_GRAD_V = 64,        /* an upstream gradient for the final v */
    B_GRAD_V_SEQ = 128,   /* an upstream gradient for v_seq */
    B_DETACH_RESET = 256, /* the reset term carries no gradient to s_t */
    B_NEED_V0 = 512,      /* write dL/dV0 per neuron */
    B_NEED_THETA = 1024   /* write dL/dtheta per neuron */
};
/* Surrogate ids (surrogates.py), both kernels. SG_NONE: spikes carry no gradient. */
enum { SG_NONE = -1, SG_SIGMOID = 0, SG_ATAN = 1 };
/* QuantReLU's rounding Q (checks.ROUNDINGS), the CPU kernels: floor, half-up, ceil. */
enum { ROUND_FLOOR = 0, ROUND_HALF_UP = 1, ROUND_CEIL = 2 };
/* The CPU kernels' element types (native.DTYPES). */
enum { DT_F32 = 0, DT_F64 = 1 };
