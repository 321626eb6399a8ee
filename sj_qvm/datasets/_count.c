/* Event counting for sj_qvm.datasets.frames: one pass over the events, no temporaries.
 *
 * count(x, y, p, j_l, j_r, height, width, out, threads) -> int
 *   x, y, p   [N] 1-D integer (or bool) buffers with any byte stride, such as the fields of a
 *             structured event array, read in place;
 *   j_l, j_r  [T] int64 segment bounds, 0 <= j_l <= j_r <= N;
 *   out       [T, 2, height, width] uint32, C-contiguous, counts are added to it:
 *             out[i, p_k != 0, y_k, x_k] += 1 for every k in [j_l[i], j_r[i]).
 *   threads   how many threads share the events of all segments, in equal contiguous shares.
 * Returns -1, or the index of an event with x outside [0, width) or y outside [0, height), and
 * out is then incomplete. The GIL is released while counting.
 *
 * The reference twin is the numpy path in frames.py (_count_numpy), and events_to_frames_ref.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <pthread.h>
#endif

enum kind { K_BOOL, K_I8, K_U8, K_I16, K_U16, K_I32, K_U32, K_I64, K_U64 };

typedef struct {
    const char *base;
    Py_ssize_t stride;
    enum kind kind;
} column;

/* The struct-module format of a native-order integer or bool buffer, as numpy exports it. */
static int parse_kind(const Py_buffer *view, enum kind *kind, const char *name)
{
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=')
        f++;
#if PY_LITTLE_ENDIAN
    else if (*f == '<')
        f++;
#else
    else if (*f == '>' || *f == '!')
        f++;
#endif
    if (f[0] != '\0' && f[1] == '\0') {
        Py_ssize_t n = view->itemsize;
        switch (f[0]) {
        case '?': *kind = K_BOOL; return 0;
        case 'b': *kind = K_I8; return 0;
        case 'B': *kind = K_U8; return 0;
        case 'h': case 'H': case 'i': case 'I': case 'l': case 'L': case 'q': case 'Q': {
            int is_signed = f[0] == 'h' || f[0] == 'i' || f[0] == 'l' || f[0] == 'q';
            if (n == 2) { *kind = is_signed ? K_I16 : K_U16; return 0; }
            if (n == 4) { *kind = is_signed ? K_I32 : K_U32; return 0; }
            if (n == 8) { *kind = is_signed ? K_I64 : K_U64; return 0; }
        }
        }
    }
    PyErr_Format(PyExc_TypeError, "%s must be a native-order integer or bool array, got format '%s'",
                 name, view->format ? view->format : "B");
    return -1;
}

/* Value at ptr as int64; an unsigned 64-bit value above INT64_MAX comes out negative, so it is
 * rejected as a coordinate and still reads as nonzero as a polarity. */
static inline int64_t load(const char *ptr, enum kind kind)
{
    switch (kind) {
    case K_BOOL: case K_U8: return *(const uint8_t *)ptr;
    case K_I8: return *(const int8_t *)ptr;
    case K_I16: { int16_t v; memcpy(&v, ptr, 2); return v; }
    case K_U16: { uint16_t v; memcpy(&v, ptr, 2); return v; }
    case K_I32: { int32_t v; memcpy(&v, ptr, 4); return v; }
    case K_U32: { uint32_t v; memcpy(&v, ptr, 4); return v; }
    case K_I64: { int64_t v; memcpy(&v, ptr, 8); return v; }
    case K_U64: { uint64_t v; memcpy(&v, ptr, 8); return (int64_t)v; }
    }
    return -1;
}

/* The common layout (16-bit coordinates, 8-bit polarity: EVENT_DTYPE and tonic's arrays). */
static Py_ssize_t count_16_8(column x, column y, column p, Py_ssize_t lo, Py_ssize_t hi,
                             uint32_t height, uint32_t width, uint32_t *frame)
{
    const int x_signed = x.kind == K_I16, y_signed = y.kind == K_I16;
    const uint32_t plane = height * width;
    for (Py_ssize_t k = lo; k < hi; k++) {
        uint16_t ux, uy;
        memcpy(&ux, x.base + k * x.stride, 2);
        memcpy(&uy, y.base + k * y.stride, 2);
        /* Sign-extended into 32 bits, a negative coordinate is a huge unsigned one. */
        const uint32_t vx = x_signed ? (uint32_t)(int32_t)(int16_t)ux : ux;
        const uint32_t vy = y_signed ? (uint32_t)(int32_t)(int16_t)uy : uy;
        if (vx >= width || vy >= height)
            return k;
        const uint32_t channel = *(const uint8_t *)(p.base + k * p.stride) != 0;
        frame[channel * plane + vy * width + vx]++;
    }
    return -1;
}

static Py_ssize_t count_any(column x, column y, column p, Py_ssize_t lo, Py_ssize_t hi,
                            uint32_t height, uint32_t width, uint32_t *frame)
{
    const Py_ssize_t plane = (Py_ssize_t)height * width;
    for (Py_ssize_t k = lo; k < hi; k++) {
        const int64_t vx = load(x.base + k * x.stride, x.kind);
        const int64_t vy = load(y.base + k * y.stride, y.kind);
        if (vx < 0 || vx >= width || vy < 0 || vy >= height)
            return k;
        const Py_ssize_t channel = load(p.base + k * p.stride, p.kind) != 0;
        frame[channel * plane + vy * width + vx]++;
    }
    return -1;
}


#define MAX_THREADS 16

/* One thread's share [begin, end) of the segments laid end to end. A segment the share enters
 * midway is counted into the private frame `head` (another share counts its start into out);
 * every other segment it touches it starts, so it owns that frame of out. */
typedef struct {
    column x, y, p;
    const int64_t *j_l, *j_r;
    Py_ssize_t frames_number;
    int64_t begin, end;
    uint32_t height, width;
    int fast;
    uint32_t *out;
    uint32_t *head;
    Py_ssize_t head_frame;
    Py_ssize_t bad;
} task;

static void *run_task(void *arg)
{
    task *t = arg;
    const Py_ssize_t frame_size = 2 * (Py_ssize_t)t->height * t->width;
    int64_t offset = 0;
    t->bad = -1;
    t->head_frame = -1;
    for (Py_ssize_t i = 0; i < t->frames_number && t->bad < 0; i++) {
        const int64_t length = t->j_r[i] - t->j_l[i];
        const int64_t from = t->begin > offset ? t->begin : offset;
        const int64_t to = t->end < offset + length ? t->end : offset + length;
        if (from < to) {
            uint32_t *frame = t->out + i * frame_size;
            if (from > offset) {
                frame = t->head;
                t->head_frame = i;
            }
            const Py_ssize_t lo = t->j_l[i] + (from - offset), hi = t->j_l[i] + (to - offset);
            t->bad = t->fast ? count_16_8(t->x, t->y, t->p, lo, hi, t->height, t->width, frame)
                             : count_any(t->x, t->y, t->p, lo, hi, t->height, t->width, frame);
        }
        offset += length;
    }
    return NULL;
}

/* Splits the work into `parts` shares, runs share 0 here and the others on threads (inline if a
 * thread cannot start), then adds the private frames into out. Returns the smallest bad index,
 * or -1. */
static Py_ssize_t run_tasks(task *tasks, Py_ssize_t parts)
{
    int64_t total = 0;
    for (Py_ssize_t i = 0; i < tasks[0].frames_number; i++)
        total += tasks[0].j_r[i] - tasks[0].j_l[i];
    const size_t frame_size = 2 * (size_t)tasks[0].height * tasks[0].width;
    for (Py_ssize_t k = 1; k < parts; k++) {
        tasks[k] = tasks[0];
        tasks[k].head = calloc(frame_size, sizeof(uint32_t));
        if (tasks[k].head == NULL) {  /* no memory for a private frame: one share */
            for (Py_ssize_t j = 1; j < k; j++)
                free(tasks[j].head);
            parts = 1;
            break;
        }
    }
    for (Py_ssize_t k = 0; k < parts; k++) {
        tasks[k].begin = total * k / parts;
        tasks[k].end = total * (k + 1) / parts;
    }
    int started[MAX_THREADS] = {0};
#ifndef _WIN32
    pthread_t threads[MAX_THREADS];
    for (Py_ssize_t k = 1; k < parts; k++)
        started[k] = pthread_create(&threads[k], NULL, run_task, &tasks[k]) == 0;
#endif
    run_task(&tasks[0]);
    Py_ssize_t bad = tasks[0].bad;
    for (Py_ssize_t k = 1; k < parts; k++) {
#ifndef _WIN32
        if (started[k])
            pthread_join(threads[k], NULL);
#endif
        if (!started[k])
            run_task(&tasks[k]);
        if (tasks[k].bad >= 0 && (bad < 0 || tasks[k].bad < bad))
            bad = tasks[k].bad;
        if (tasks[k].head_frame >= 0) {
            uint32_t *frame = tasks[k].out + tasks[k].head_frame * frame_size;
            for (size_t j = 0; j < frame_size; j++)
                frame[j] += tasks[k].head[j];
        }
        free(tasks[k].head);
    }
    return bad;
}

static PyObject *count(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *objects[6];
    Py_ssize_t height, width, parts;
    if (!PyArg_ParseTuple(args, "OOOOOnnOn:count", &objects[0], &objects[1], &objects[2],
                          &objects[3], &objects[4], &height, &width, &objects[5], &parts))
        return NULL;
    if (parts < 1 || parts > MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be in [1, %d], got %zd", MAX_THREADS, parts);
        return NULL;
    }
    static const char *names[6] = {"x", "y", "p", "j_l", "j_r", "out"};
    Py_buffer views[6];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 6; got++) {
        int flags = got < 3 ? PyBUF_STRIDES | PyBUF_FORMAT : PyBUF_C_CONTIGUOUS | PyBUF_FORMAT;
        if (got == 5)
            flags |= PyBUF_WRITABLE;
        if (PyObject_GetBuffer(objects[got], &views[got], flags) < 0)
            goto done;
    }
    const Py_ssize_t n = views[0].ndim == 1 ? views[0].shape[0] : -1;
    for (int i = 0; i < 5; i++) {
        if (views[i].ndim != 1 || (i < 3 && views[i].shape[0] != n)) {
            PyErr_Format(PyExc_ValueError, "%s must be 1-D%s", names[i], i < 3 ? " with the length of x" : "");
            goto done;
        }
    }
    enum kind kinds[3], bound_kind;
    for (int i = 0; i < 3; i++)
        if (parse_kind(&views[i], &kinds[i], names[i]) < 0)
            goto done;
    const Py_ssize_t frames_number = views[3].shape[0];
    if (views[4].shape[0] != frames_number || parse_kind(&views[3], &bound_kind, "j_l") < 0 ||
        bound_kind != K_I64 || parse_kind(&views[4], &bound_kind, "j_r") < 0 || bound_kind != K_I64) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "j_l and j_r must be int64 arrays of one length");
        goto done;
    }
    enum kind out_kind;
    if (parse_kind(&views[5], &out_kind, "out") < 0 || out_kind != K_U32 || height < 1 || width < 1 ||
        height > (1 << 15) || width > (1 << 15) || views[5].len != frames_number * 2 * height * width * 4) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "out must be a uint32 array of shape [T, 2, height, width], "
                                          "with 1 <= height, width <= 32768");
        goto done;
    }
    const int64_t *j_l = views[3].buf, *j_r = views[4].buf;
    for (Py_ssize_t i = 0; i < frames_number; i++) {
        if (j_l[i] < 0 || j_l[i] > j_r[i] || j_r[i] > n) {
            PyErr_Format(PyExc_ValueError, "segment %zd is [%lld, %lld), outside [0, %zd]", i,
                         (long long)j_l[i], (long long)j_r[i], n);
            goto done;
        }
    }
    column columns[3];
    for (int i = 0; i < 3; i++) {
        columns[i].base = views[i].buf;
        columns[i].stride = views[i].strides[0];
        columns[i].kind = kinds[i];
    }
    const int fast = (kinds[0] == K_I16 || kinds[0] == K_U16) && (kinds[1] == K_I16 || kinds[1] == K_U16) &&
                     (kinds[2] == K_BOOL || kinds[2] == K_I8 || kinds[2] == K_U8);
    task tasks[MAX_THREADS];
    tasks[0] = (task){
        .x = columns[0], .y = columns[1], .p = columns[2], .j_l = j_l, .j_r = j_r,
        .frames_number = frames_number, .height = (uint32_t)height, .width = (uint32_t)width,
        .fast = fast, .out = views[5].buf, .head = NULL, .head_frame = -1, .bad = -1,
    };
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = run_tasks(tasks, parts);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(bad);
done:
    for (int i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"count", count, METH_VARARGS,
     "count(x, y, p, j_l, j_r, height, width, out, threads) -> -1, or the index of an event "
     "outside the sensor; adds out[i, p != 0, y, x] += 1 over events [j_l[i], j_r[i])."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT, .m_name = "_count", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__count(void) { return PyModule_Create(&module); }
