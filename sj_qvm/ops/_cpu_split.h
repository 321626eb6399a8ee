/* Where a kernel call of sj_qvm/ops/_cpu.c runs: its vector build (use_avx2) and its threads'
 * shares (run_split: on the OpenMP pool or on a pthread each). Included once, by _cpu.c, after
 * _cpu_kernels.h; no Python API here. */
#ifndef SJ_QVM_CPU_SPLIT_H
#define SJ_QVM_CPU_SPLIT_H

#ifndef _WIN32
#include <pthread.h>
#endif

#define MAX_THREADS 64
/* Elements per thread, below which one thread does it all: starting a thread costs about as much
 * as 0.5 M elements of QuantReLU on the benchmark machine. min_share() reads and sets it. */
static Py_ssize_t min_share = 524288;

typedef void (*kernel)(const task *);

/* [avx2][kind][dtype]; kind 0 quant_relu, 1 if_forward, 2 spike_rate, 3 if_rate,
 * 4 if_backward, 5 quant_relu_backward. */
static const kernel KERNELS[2][6][2] = {
    {{quant_relu_float, quant_relu_double}, {if_forward_float, if_forward_double},
     {spike_rate_float, spike_rate_double}, {if_rate_float, if_rate_double},
     {if_backward_float, if_backward_double},
     {quant_relu_backward_float, quant_relu_backward_double}},
    {{quant_relu_float_avx2, quant_relu_double_avx2},
     {if_forward_float_avx2, if_forward_double_avx2},
     {spike_rate_float_avx2, spike_rate_double_avx2}, {if_rate_float_avx2, if_rate_double_avx2},
     {if_backward_float_avx2, if_backward_double_avx2},
     {quant_relu_backward_float_avx2, quant_relu_backward_double_avx2}},
};

/* 1 where the AVX2 builds run (set at import where the CPU has AVX2; simd() switches it). */
static int use_avx2 = 0;

/* 1 where run_split shares out its work on the OpenMP thread pool (built with OpenMP, and
 * switched on by pool(); ops/native.py does so at import where that pool is torch's own);
 * 0: a pthread per share. */
static int use_pool = 0;

static int cpu_has_avx2(void)
{
#if HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
#else
    return 0;
#endif
}

static void run(const task *t)
{
    KERNELS[use_avx2][t->kind][t->dtype](t);
}

#ifndef _WIN32
static void *run_thread(void *arg)
{
    run((const task *)arg);
    return NULL;
}
#endif

/* Splits [0, n) into equal contiguous shares and runs them on the OpenMP pool (use_pool), or
 * share 0 here and the rest on a pthread each. */
static void run_split(task proto, Py_ssize_t n, Py_ssize_t threads)
{
    Py_ssize_t parts = threads;
    if (parts > n / min_share)
        parts = n / min_share;
    if (parts < 1)
        parts = 1;
#ifdef _WIN32
    parts = 1;
#endif
    task tasks[MAX_THREADS];
    Py_ssize_t share = (n + parts - 1) / parts;
    share = (share + 63) / 64 * 64; /* whole cache lines per thread */
    for (Py_ssize_t k = 0; k < parts; k++) {
        tasks[k] = proto;
        tasks[k].part = (int)k;
        tasks[k].begin = k * share < n ? k * share : n;
        tasks[k].end = (k + 1) * share < n ? (k + 1) * share : n;
    }
#ifdef _OPENMP
    if (use_pool && parts > 1) {
#pragma omp parallel for num_threads(parts) schedule(static, 1)
        for (Py_ssize_t k = 0; k < parts; k++)
            run(&tasks[k]);
        return;
    }
#endif
#ifndef _WIN32
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (Py_ssize_t k = 1; k < parts; k++)
        started[k] = pthread_create(&ids[k], NULL, run_thread, &tasks[k]) == 0;
    run(&tasks[0]);
    for (Py_ssize_t k = 1; k < parts; k++) {
        if (started[k])
            pthread_join(ids[k], NULL);
        else
            run(&tasks[k]); /* no thread: do its share here */
    }
#else
    run(&tasks[0]);
#endif
}

#endif
