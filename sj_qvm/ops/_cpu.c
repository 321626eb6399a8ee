/* CPU kernels for sj_qvm.ops: one pass over memory each, no temporaries, the GIL released.
 *
 * Both take raw addresses of tensors that the Python wrappers (ops/cpu.py) have checked:
 * CPU, C-contiguous, float32 (dtype 0) or float64 (dtype 1), of the sizes stated here. A
 * parameter p (gamma, theta) is a scalar p_value when p_addr is 0, else the element
 * p[(i / div) % mod] of a contiguous buffer for the flat neuron index i (launch.index_form).
 *
 * quant_relu(x, out, n, dtype, g_addr, g_value, g_div, g_mod, levels, rounding, threads)
 *   out[i] = clip(Q(x[i] * L / gamma), 0, L) * gamma / L, NaN -> 0, for i < n;
 *   rounding ROUND_FLOOR, ROUND_HALF_UP (floor(z + 1/2)) or ROUND_CEIL, and dtype DT_F32 or
 *   DT_F64 (if_loop/qvm_enums.h, as every id below). The operations and their
 *   order are those of ops/quant_relu/torch.py, so the results are bit-identical.
 *   (The IF loops reset with V = U - theta * s, s in {0, 1}: branch-free, and exact.)
 *
 * if_forward(x, x_tstride, spike, v, v0_fill, v0_addr, v0_value, v0_div, v0_mod, v_seq, h,
 *            th_addr, th_value, th_div, th_mod, n, T, strict, expected, dtype, threads)
 *   T soft-reset IF steps of n neurons, in place on v (V0 in, V_T out; where v0_fill is 1 the
 *   kernel writes V0 into v itself, from v0_* in a parameter's index form):
 *       U = V + q_t;  s = U >= theta (U > theta if strict);  V = U - theta * s
 *   q_t = x[t * x_tstride + i]; x_tstride is n (a [T, n] sequence) or 0 (one [n] current
 *   broadcast over T). expected: q_t = x_0 + (sum_{t>=1} (x_t - x_0)) / T, summed in time order
 *   (functional.expected_current), or x_0 itself when x_tstride is 0. spike [T, n] in x's dtype;
 *   v_seq [T, n] (V_t) unless its address is 0; h [T, n] (h_t = U_t - theta, what the backward
 *   reads) unless its address is 0. Same predicate and arithmetic as
 *   ops/if_loop/torch.py, so spikes and V are bit-identical to it.
 *
 * if_backward(h, x, x_tstride, v0, g_spike, g_v, g_v_seq, g_x, g_v0, g_th, th_addr, th_value,
 *             th_div, th_mod, n, T, strict, expected, detach, sg_id, p0, p1, dtype, threads)
 *   BPTT through if_forward's T steps (the rule in _cpu_kernels.h), g_x [T, n] out. h_t comes
 *   from h [T, n] (if_forward's h), or where h is 0 it is recomputed from x (as if_forward reads
 *   it) and V_0 (v0 [n]), bit for bit, so that the forward need not write h.
 *
 * quant_relu_backward(x, g, g_x, g_acc, n, dtype, g_addr, g_value, g_div, g_mod, levels,
 *                     rounding, threads)
 *   QuantReLU's STE backward in one pass: g_x, and dL/dgamma summed per gamma value in double
 *   into g_acc, a zeroed float64 [threads, g_mod] buffer, one row per thread's share (the caller
 *   adds the rows; ops/quant_relu/cpu.py). Either output may be absent (address 0).
 *
 * simd(level): -1 tells, 0 or 1 sets whether the AVX2 builds of the kernels run (1 only where
 *   the CPU has AVX2; the default at import). Both builds give the same bits.
 *
 * pool(mode): -1 tells, 0 or 1 sets whether the threads' shares run on the OpenMP thread pool
 *   (1 only where the extension was built with OpenMP, module constant OPENMP) instead of on a
 *   pthread each. Where the pool is torch's own, its workers take the shares at once; a pthread
 *   competes with them while they spin after torch's last op (up to 1.46x slower on 2 cores,
 *   benchmarks/bench_pool.py). The shares, hence the bits, are the same either way.
 *
 * spike_rate(spike, out, n, T, th_addr, th_value, th_div, th_mod, dtype, threads)
 *   out[i] = (sum_t spike[t * n + i]) * theta / T: the mean current theta * N / T that a
 *   per-sample layer passes on, in the order of torch's ``spike_seq.sum(0) * theta / T``.
 *
 * if_rate(q, v, v0_fill, v0_addr, v0_value, v0_div, v0_mod, out, th_addr, th_value, th_div,
 *         th_mod, n, T, strict, dtype, threads)
 *   The IF loop of if_forward on one constant current q [n] (T steps, V in place) that keeps
 *   only the count N of each neuron and writes out[i] = N * theta / T (spike_rate's order):
 *   for a layer whose spike train nobody reads, nothing of size [T, n] is written.
 *
 * Every kernel has a baseline and an AVX2 build (_cpu_kernels.h), with the same bits.
 * Built with -ffp-contract=off (a fused multiply-add would round differently from torch) and
 * -fno-trapping-math (so that the compare-and-reset loops vectorize; rounding is unchanged).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include "_cpu_kernels.h"
#include "_cpu_split.h"

/* The kernel tables (_cpu_split.h) are indexed by dtype. */
_Static_assert(DT_F32 == 0 && DT_F64 == 1, "KERNELS[simd][kind][dtype] needs DT_F32 0, DT_F64 1");
#define BAD_DTYPE(d) ((d) != DT_F32 && (d) != DT_F64)
#define BAD_ROUNDING(r) ((r) != ROUND_FLOOR && (r) != ROUND_HALF_UP && (r) != ROUND_CEIL)
#define BAD_SURROGATE(s) ((s) != SG_SIGMOID && (s) != SG_ATAN)

static int check_threads(Py_ssize_t threads)
{
    if (threads < 1 || threads > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be in [1, %d], got %zd", MAX_THREADS, threads);
        return -1;
    }
    return 0;
}

static PyObject *quant_relu(PyObject *self, PyObject *args)
{
    unsigned long long x, out, g_addr;
    Py_ssize_t n, g_div, g_mod, levels, threads;
    int dtype, rounding;
    double g_value;
    if (!PyArg_ParseTuple(args, "KKniKdnnnin:quant_relu", &x, &out, &n, &dtype, &g_addr, &g_value,
                          &g_div, &g_mod, &levels, &rounding, &threads))
        return NULL;
    if (check_threads(threads) || n < 0 || g_div < 1 || g_mod < 1 || levels < 1
        || BAD_ROUNDING(rounding) || BAD_DTYPE(dtype)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "quant_relu: bad size, levels, rounding or dtype");
        return NULL;
    }
    task t = {0};
    t.kind = 0;
    t.x = (uintptr_t)x, t.out = (uintptr_t)out, t.p_addr = (uintptr_t)g_addr;
    t.p_value = g_value, t.p_div = g_div, t.p_mod = g_mod, t.levels = levels;
    t.rounding = rounding, t.dtype = dtype;
    Py_BEGIN_ALLOW_THREADS
    run_split(t, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *if_forward(PyObject *self, PyObject *args)
{
    unsigned long long x, spike, v, v0_addr, v_seq, h, th_addr;
    Py_ssize_t x_tstride, v0_div, v0_mod, th_div, th_mod, n, threads;
    int v0_fill, T, strict, expected, dtype;
    double v0_value, th_value;
    if (!PyArg_ParseTuple(args, "KnKKiKdnnKKKdnnniiiin:if_forward", &x, &x_tstride, &spike, &v,
                          &v0_fill, &v0_addr, &v0_value, &v0_div, &v0_mod, &v_seq, &h, &th_addr,
                          &th_value, &th_div, &th_mod, &n, &T, &strict, &expected, &dtype,
                          &threads))
        return NULL;
    if (check_threads(threads) || n < 0 || T < 1 || th_div < 1 || th_mod < 1 || v0_div < 1
        || v0_mod < 1 || (x_tstride != 0 && x_tstride != n) || BAD_DTYPE(dtype)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "if_forward: bad size, T, stride or dtype");
        return NULL;
    }
    task t = {0};
    t.kind = 1;
    t.x = (uintptr_t)x, t.spike = (uintptr_t)spike, t.v = (uintptr_t)v;
    t.v_seq = (uintptr_t)v_seq, t.h = (uintptr_t)h, t.p_addr = (uintptr_t)th_addr;
    t.p_value = th_value;
    t.p_div = th_div, t.p_mod = th_mod, t.x_tstride = x_tstride, t.n = n;
    t.T = T, t.strict = strict, t.expected = expected, t.dtype = dtype;
    t.v0_fill = v0_fill, t.v0_addr = (uintptr_t)v0_addr, t.v0_value = v0_value;
    t.v0_div = v0_div, t.v0_mod = v0_mod;
    Py_BEGIN_ALLOW_THREADS
    run_split(t, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *spike_rate(PyObject *self, PyObject *args)
{
    unsigned long long spike, out, th_addr;
    Py_ssize_t n, th_div, th_mod, threads;
    int T, dtype;
    double th_value;
    if (!PyArg_ParseTuple(args, "KKniKdnnin:spike_rate", &spike, &out, &n, &T, &th_addr,
                          &th_value, &th_div, &th_mod, &dtype, &threads))
        return NULL;
    if (check_threads(threads) || n < 0 || T < 1 || th_div < 1 || th_mod < 1
        || BAD_DTYPE(dtype)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "spike_rate: bad size, T or dtype");
        return NULL;
    }
    task t = {0};
    t.kind = 2;
    t.spike = (uintptr_t)spike, t.out = (uintptr_t)out, t.n = n, t.T = T;
    t.p_addr = (uintptr_t)th_addr, t.p_value = th_value, t.p_div = th_div, t.p_mod = th_mod;
    t.dtype = dtype;
    Py_BEGIN_ALLOW_THREADS
    run_split(t, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *if_rate(PyObject *self, PyObject *args)
{
    unsigned long long x, v, v0_addr, out, th_addr;
    Py_ssize_t n, v0_div, v0_mod, th_div, th_mod, threads;
    int v0_fill, T, strict, dtype;
    double v0_value, th_value;
    if (!PyArg_ParseTuple(args, "KKiKdnnKKdnnniiin:if_rate", &x, &v, &v0_fill, &v0_addr,
                          &v0_value, &v0_div, &v0_mod, &out, &th_addr, &th_value, &th_div,
                          &th_mod, &n, &T, &strict, &dtype, &threads))
        return NULL;
    if (check_threads(threads) || n < 0 || T < 1 || th_div < 1 || th_mod < 1 || v0_div < 1
        || v0_mod < 1 || BAD_DTYPE(dtype)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "if_rate: bad size, T or dtype");
        return NULL;
    }
    task t = {0};
    t.kind = 3;
    t.x = (uintptr_t)x, t.v = (uintptr_t)v, t.out = (uintptr_t)out, t.n = n, t.T = T;
    t.p_addr = (uintptr_t)th_addr, t.p_value = th_value, t.p_div = th_div, t.p_mod = th_mod;
    t.strict = strict, t.dtype = dtype;
    t.v0_fill = v0_fill, t.v0_addr = (uintptr_t)v0_addr, t.v0_value = v0_value;
    t.v0_div = v0_div, t.v0_mod = v0_mod;
    Py_BEGIN_ALLOW_THREADS
    run_split(t, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *if_backward(PyObject *self, PyObject *args)
{
    unsigned long long h, x, v0, g_spike, g_v, g_v_seq, g_x, g_v0, g_th, th_addr;
    Py_ssize_t x_tstride, th_div, th_mod, n, threads;
    int T, strict, expected, detach, sg_id, dtype;
    double th_value, p0, p1;
    if (!PyArg_ParseTuple(args, "KKnKKKKKKKKdnnniiiiiddin:if_backward", &h, &x, &x_tstride, &v0,
                          &g_spike, &g_v, &g_v_seq, &g_x, &g_v0, &g_th, &th_addr, &th_value,
                          &th_div, &th_mod, &n, &T, &strict, &expected, &detach, &sg_id, &p0,
                          &p1, &dtype, &threads))
        return NULL;
    if (check_threads(threads) || n < 0 || T < 1 || th_div < 1 || th_mod < 1
        || BAD_DTYPE(dtype) || BAD_SURROGATE(sg_id)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "if_backward: bad size, T, surrogate or dtype");
        return NULL;
    }
    if (!h && (!x || !v0 || T > RECOMPUTE / 8 || (x_tstride != 0 && x_tstride != n))) {
        PyErr_SetString(PyExc_ValueError, "if_backward: without h it needs x, a stride of 0 or n, "
                                          "V_0 and T <= RECOMPUTE_MAX_T");
        return NULL;
    }
    task t = {0};
    t.kind = 4;
    t.x = (uintptr_t)x, t.x_tstride = x_tstride, t.v = (uintptr_t)v0;
    t.h = (uintptr_t)h, t.g_spike = (uintptr_t)g_spike, t.g_v = (uintptr_t)g_v;
    t.g_v_seq = (uintptr_t)g_v_seq;
    t.g_x = (uintptr_t)g_x, t.g_v0 = (uintptr_t)g_v0, t.g_th = (uintptr_t)g_th;
    t.p_addr = (uintptr_t)th_addr, t.p_value = th_value, t.p_div = th_div, t.p_mod = th_mod;
    t.n = n, t.T = T, t.strict = strict, t.expected = expected, t.detach = detach;
    t.sg_id = sg_id, t.sg_p0 = p0, t.sg_p1 = p1, t.dtype = dtype;
    Py_BEGIN_ALLOW_THREADS
    run_split(t, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *quant_relu_backward(PyObject *self, PyObject *args)
{
    unsigned long long x, g, g_x, g_g, g_addr;
    Py_ssize_t n, g_div, g_mod, levels, threads;
    int dtype, rounding;
    double g_value;
    if (!PyArg_ParseTuple(args, "KKKKniKdnnnin:quant_relu_backward", &x, &g, &g_x, &g_g, &n,
                          &dtype, &g_addr, &g_value, &g_div, &g_mod, &levels, &rounding,
                          &threads))
        return NULL;
    if (check_threads(threads) || n < 0 || g_div < 1 || g_mod < 1 || levels < 1
        || BAD_ROUNDING(rounding) || BAD_DTYPE(dtype)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError,
                            "quant_relu_backward: bad size, levels, rounding or dtype");
        return NULL;
    }
    task t = {0};
    t.kind = 5;
    t.x = (uintptr_t)x, t.g_spike = (uintptr_t)g, t.g_x = (uintptr_t)g_x, t.g_th = (uintptr_t)g_g;
    t.p_addr = (uintptr_t)g_addr, t.p_value = g_value, t.p_div = g_div, t.p_mod = g_mod;
    t.levels = levels, t.rounding = rounding, t.dtype = dtype;
    Py_BEGIN_ALLOW_THREADS
    run_split(t, n, threads);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *simd(PyObject *self, PyObject *args)
{
    int level;
    if (!PyArg_ParseTuple(args, "i:simd", &level))
        return NULL;
    if (level < -1 || level > 1) {
        PyErr_Format(PyExc_ValueError, "simd: level must be -1 (query), 0 (baseline) or 1 (AVX2 "
                     "where the CPU has it), got %d", level);
        return NULL;
    }
    if (level >= 0)
        use_avx2 = level && cpu_has_avx2();
    return PyLong_FromLong(use_avx2);
}

static PyObject *pool(PyObject *self, PyObject *args)
{
    int mode;
    if (!PyArg_ParseTuple(args, "i:pool", &mode))
        return NULL;
    if (mode < -1 || mode > 1) {
        PyErr_Format(PyExc_ValueError, "pool: mode must be -1 (query), 0 (a pthread per share) "
                     "or 1 (the OpenMP pool, where built with OpenMP), got %d", mode);
        return NULL;
    }
#ifdef _OPENMP
    if (mode >= 0)
        use_pool = mode;
#endif
    return PyLong_FromLong(use_pool);
}

static PyObject *min_share_(PyObject *self, PyObject *args)
{
    Py_ssize_t value;
    if (!PyArg_ParseTuple(args, "n:min_share", &value))
        return NULL;
    if (value < -1 || value == 0) {
        PyErr_Format(PyExc_ValueError, "min_share: must be -1 (query) or >= 1 elements per "
                     "thread, got %zd", value);
        return NULL;
    }
    if (value > 0)
        min_share = value;
    return PyLong_FromSsize_t(min_share);
}

static PyMethodDef methods[] = {
    {"min_share", min_share_, METH_VARARGS,
     "min_share(n) -> elements per thread below which a kernel runs on one thread; -1 queries"},
    {"pool", pool, METH_VARARGS,
     "pool(mode) -> the mode in use: -1 queries, 0 runs each thread's share on a pthread, 1 on "
     "the OpenMP pool (where built with OpenMP)"},
    {"simd", simd, METH_VARARGS,
     "simd(level) -> the level in use: -1 queries, 0 runs the baseline builds, 1 the AVX2 ones "
     "where the CPU has AVX2"},
    {"quant_relu", quant_relu, METH_VARARGS,
     "quant_relu(x, out, n, dtype, g_addr, g_value, g_div, g_mod, levels, rounding, threads)"},
    {"if_forward", if_forward, METH_VARARGS,
     "if_forward(x, x_tstride, spike, v, v0_fill, v0_addr, v0_value, v0_div, v0_mod, v_seq, h, "
     "th_addr, th_value, th_div, th_mod, n, T, strict, expected, dtype, threads)"},
    {"quant_relu_backward", quant_relu_backward, METH_VARARGS,
     "quant_relu_backward(x, g, g_x, g_gamma_acc, n, dtype, g_addr, g_value, g_div, g_mod, "
     "levels, rounding, threads)"},
    {"if_backward", if_backward, METH_VARARGS,
     "if_backward(h, x, x_tstride, v0, g_spike, g_v, g_v_seq, g_x, g_v0, g_th, th_addr, th_value, "
     "th_div, th_mod, n, T, strict, expected, detach, sg_id, p0, p1, dtype, threads)"},
    {"if_rate", if_rate, METH_VARARGS,
     "if_rate(q, v, v0_fill, v0_addr, v0_value, v0_div, v0_mod, out, th_addr, th_value, th_div, "
     "th_mod, n, T, strict, dtype, threads)"},
    {"spike_rate", spike_rate, METH_VARARGS,
     "spike_rate(spike, out, n, T, th_addr, th_value, th_div, th_mod, dtype, threads)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu",
                                    "CPU kernels for QuantReLU, the IF loop and its spike rate", -1, methods};

/* ABI: the version of these signatures (ops/native.py refuses an extension built from an older
 * source). 2: if_backward takes g_v_seq. 3: quant_relu_backward sums dL/dgamma itself.
 * 4: min_share(). 5: if_backward takes x, x_tstride and V_0, to recompute h where h is 0.
 * 6: if_forward and if_rate take V_0 (v0_fill and its index form) to fill v themselves.
 * 7: pool() and the OPENMP constant. 8: the ids of if_loop/qvm_enums.h, exported as ENUMS. */
PyMODINIT_FUNC PyInit__cpu(void)
{
    PyObject *m = PyModule_Create(&module);
    use_avx2 = cpu_has_avx2();
#ifdef _OPENMP
    const int openmp = 1;
#else
    const int openmp = 0;
#endif
    PyObject *enums = m ? Py_BuildValue(
        "{s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "SG_NONE", SG_NONE, "SG_SIGMOID", SG_SIGMOID,
        "SG_ATAN", SG_ATAN, "ROUND_FLOOR", ROUND_FLOOR, "ROUND_HALF_UP", ROUND_HALF_UP,
        "ROUND_CEIL", ROUND_CEIL, "DT_F32", DT_F32, "DT_F64", DT_F64) : NULL;
    if (m && (!enums || PyModule_AddObject(m, "ENUMS", enums) < 0)) {
        Py_XDECREF(enums);
        Py_DECREF(m);
        return NULL;
    }
    if (m && (PyModule_AddIntConstant(m, "ABI", 8) < 0
              || PyModule_AddIntConstant(m, "OPENMP", openmp) < 0
              || PyModule_AddIntConstant(m, "RECOMPUTE_MAX_T", RECOMPUTE / 8) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
