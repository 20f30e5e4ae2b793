/*
 * vlmguard._native: fused resize -> normalise -> HWC-to-CHW for the guard's image models.
 *
 * Written against the plain CPython C API (no NumPy headers): the input comes in through the
 * buffer protocol, the output goes back as a bytearray that Python wraps with np.frombuffer.
 *
 * The definition is the one in vlmguard/preprocess.py (the NumPy reference):
 *   1. k = min(H / height, W / width) (integer division); if k >= 2, average k x k blocks
 *      (trailing partial blocks dropped), giving an (H/k) x (W/k) float image;
 *   2. bilinear resize, half-pixel centres, edges clamped (OpenCV INTER_LINEAR);
 *   3. (v / 255 - mean) / std per channel, written channel-first as float32.
 *
 * One pass over the output rows: each needed source row (box-reduced on the fly when k >= 2)
 * is resized horizontally once into a two-slot cache of planar rows, and each output row is a
 * vertical blend of two cached rows, normalised and written straight into the three planes.
 * The GIL is released for the whole computation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(_MSC_VER)
#define restrict __restrict
#define FORCE_INLINE static __forceinline
#else
#define FORCE_INLINE static inline __attribute__((always_inline))
#endif

#define VCHUNK 1024

typedef struct {
    Py_ssize_t lo; /* first tap (pixel index) */
    Py_ssize_t hi; /* second tap, clamped */
    float f;       /* weight of the second tap */
} Tap;

/* OpenCV INTER_LINEAR coordinates: pos = (i + 0.5) * src / dst - 0.5, clamped to [0, src-1]. */
static void compute_taps(Py_ssize_t src, Py_ssize_t dst, Tap *taps) {
    const double scale = (double)src / (double)dst;
    for (Py_ssize_t i = 0; i < dst; i++) {
        double pos = ((double)i + 0.5) * scale - 0.5;
        if (pos < 0.0) pos = 0.0;
        if (pos > (double)(src - 1)) pos = (double)(src - 1);
        Py_ssize_t lo = (Py_ssize_t)floor(pos);
        taps[i].lo = lo;
        taps[i].hi = lo + 1 < src ? lo + 1 : src - 1;
        taps[i].f = (float)(pos - (double)lo);
    }
}

typedef struct {
    /* source */
    const uint8_t *src;
    Py_ssize_t src_h, src_w, src_stride; /* stride in bytes between rows */
    /* box reduction */
    Py_ssize_t k;      /* block size, 1 = no reduction */
    Py_ssize_t red_w;  /* width after reduction (= src_w when k == 1) */
    uint16_t *acc16;   /* vertical sums, red_w * k * 3, used when k*255 fits 16 bits */
    uint32_t *acc32;   /* vertical sums otherwise */
    float *row;        /* one (reduced) source row as float, red_w * 3 */
    /* bilinear */
    Py_ssize_t out_h, out_w;
    const Tap *xt;
    const Tap *yt;
    float *slot[2]; /* horizontally resized rows, planar: 3 * out_w */
    Py_ssize_t slot_row[2];
    /* normalisation, in 0..255 units: (v - m) / s */
    float m[3], s[3];
    float *out; /* 3 * out_h * out_w */
} Job;

/* Sum k consecutive pixels of the vertical sums into one float pixel (times inv = 1/k^2). */
FORCE_INLINE void hsum16(const uint16_t *restrict acc, float *restrict row, Py_ssize_t red_w,
                         Py_ssize_t k, float inv) {
    for (Py_ssize_t c = 0; c < red_w; c++) {
        const uint16_t *a = acc + c * 3 * k;
        uint32_t s0 = 0, s1 = 0, s2 = 0;
        for (Py_ssize_t j = 0; j < k; j++) {
            s0 += a[j * 3 + 0];
            s1 += a[j * 3 + 1];
            s2 += a[j * 3 + 2];
        }
        row[c * 3 + 0] = (float)s0 * inv;
        row[c * 3 + 1] = (float)s1 * inv;
        row[c * 3 + 2] = (float)s2 * inv;
    }
}

/* Produce (reduced) source row r as floats in job->row, pixel-interleaved. */
static void load_row(Job *job, Py_ssize_t r) {
    const Py_ssize_t k = job->k;
    const Py_ssize_t n = job->red_w * 3; /* floats in the row */
    float *restrict row = job->row;
    if (k == 1) {
        const uint8_t *restrict s = job->src + r * job->src_stride;
        for (Py_ssize_t i = 0; i < n; i++) row[i] = (float)s[i];
        return;
    }
    const Py_ssize_t span = n * k; /* bytes of each source row that fall in whole blocks */
    const uint8_t *first = job->src + (r * k) * job->src_stride;
    const float inv = 1.0f / (float)(k * k);
    if (job->acc16 != NULL) {
        uint16_t *restrict acc = job->acc16;
        /* column chunks keep the running sums in L1 while the k source rows stream past */
        for (Py_ssize_t i0 = 0; i0 < span; i0 += VCHUNK) {
            const Py_ssize_t i1 = i0 + VCHUNK < span ? i0 + VCHUNK : span;
            for (Py_ssize_t i = i0; i < i1; i++) acc[i] = first[i];
            for (Py_ssize_t j = 1; j < k; j++) {
                const uint8_t *restrict s = first + j * job->src_stride;
                for (Py_ssize_t i = i0; i < i1; i++) acc[i] = (uint16_t)(acc[i] + s[i]);
            }
        }
        switch (k) { /* constant block sizes let the compiler unroll the inner sum */
        case 2: hsum16(acc, row, job->red_w, 2, inv); break;
        case 3: hsum16(acc, row, job->red_w, 3, inv); break;
        case 4: hsum16(acc, row, job->red_w, 4, inv); break;
        case 5: hsum16(acc, row, job->red_w, 5, inv); break;
        case 6: hsum16(acc, row, job->red_w, 6, inv); break;
        case 7: hsum16(acc, row, job->red_w, 7, inv); break;
        case 8: hsum16(acc, row, job->red_w, 8, inv); break;
        default: hsum16(acc, row, job->red_w, k, inv); break;
        }
    } else {
        uint32_t *restrict acc = job->acc32;
        for (Py_ssize_t i = 0; i < span; i++) acc[i] = first[i];
        for (Py_ssize_t j = 1; j < k; j++) {
            const uint8_t *restrict s = first + j * job->src_stride;
            for (Py_ssize_t i = 0; i < span; i++) acc[i] += s[i];
        }
        for (Py_ssize_t c = 0; c < job->red_w; c++) {
            const uint32_t *a = acc + c * 3 * k;
            uint64_t s0 = 0, s1 = 0, s2 = 0;
            for (Py_ssize_t j = 0; j < k; j++) {
                s0 += a[j * 3 + 0];
                s1 += a[j * 3 + 1];
                s2 += a[j * 3 + 2];
            }
            row[c * 3 + 0] = (float)((double)s0 / (double)(k * k));
            row[c * 3 + 1] = (float)((double)s1 / (double)(k * k));
            row[c * 3 + 2] = (float)((double)s2 / (double)(k * k));
        }
    }
}

/* Resize job->row horizontally into a planar slot. */
static void hresize(const Job *job, float *restrict dst) {
    const Py_ssize_t w = job->out_w;
    const float *restrict row = job->row;
    const Tap *restrict xt = job->xt;
    float *restrict d0 = dst, *restrict d1 = dst + w, *restrict d2 = dst + 2 * w;
    for (Py_ssize_t x = 0; x < w; x++) {
        const float *a = row + xt[x].lo * 3;
        const float *b = row + xt[x].hi * 3;
        const float f = xt[x].f, g = 1.0f - f;
        d0[x] = a[0] * g + b[0] * f;
        d1[x] = a[1] * g + b[1] * f;
        d2[x] = a[2] * g + b[2] * f;
    }
}

/* Return the slot holding resized row r, filling a slot that does not hold `keep`. */
static const float *get_row(Job *job, Py_ssize_t r, Py_ssize_t keep) {
    if (job->slot_row[0] == r) return job->slot[0];
    if (job->slot_row[1] == r) return job->slot[1];
    int i = (job->slot_row[0] == keep) ? 1 : 0;
    load_row(job, r);
    hresize(job, job->slot[i]);
    job->slot_row[i] = r;
    return job->slot[i];
}

static void run_job(Job *job) {
    const Py_ssize_t w = job->out_w, plane = job->out_h * job->out_w;
    for (Py_ssize_t y = 0; y < job->out_h; y++) {
        const Tap t = job->yt[y];
        const float *a = get_row(job, t.lo, t.hi);
        const float *b = get_row(job, t.hi, t.lo);
        const float f = t.f, g = 1.0f - f;
        for (int c = 0; c < 3; c++) {
            const float *restrict ac = a + c * w;
            const float *restrict bc = b + c * w;
            float *restrict o = job->out + c * plane + y * w;
            const float m = job->m[c], s = job->s[c];
            for (Py_ssize_t x = 0; x < w; x++) o[x] = (ac[x] * g + bc[x] * f - m) / s;
        }
    }
}

/* Read a length-3 sequence of finite floats. */
static int read_triple(PyObject *obj, const char *name, float out[3]) {
    PyObject *seq = PySequence_Fast(obj, "");
    if (seq == NULL) {
        PyErr_Format(PyExc_ValueError, "%s must be a sequence of 3 floats (one per RGB channel)",
                     name);
        return -1;
    }
    if (PySequence_Fast_GET_SIZE(seq) != 3) {
        PyErr_Format(PyExc_ValueError,
                     "%s must have 3 values (one per RGB channel), got %zd", name,
                     PySequence_Fast_GET_SIZE(seq));
        Py_DECREF(seq);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s[%d] must be a float", name, i);
            Py_DECREF(seq);
            return -1;
        }
        if (!isfinite(v)) {
            PyErr_Format(PyExc_ValueError, "%s[%d] must be finite", name, i);
            Py_DECREF(seq);
            return -1;
        }
        out[i] = (float)v;
    }
    Py_DECREF(seq);
    return 0;
}

PyDoc_STRVAR(resize_normalize_doc,
             "resize_normalize(rgb, height, width, mean, std) -> bytearray\n"
             "\n"
             "rgb: a C-contiguous HxWx3 uint8 buffer (e.g. a NumPy array). Returns the\n"
             "3 x height x width float32 tensor (native byte order) as a bytearray: box\n"
             "pre-reduction when downscaling >= 2x on both axes, bilinear with half-pixel\n"
             "centres and clamped edges, then (v / 255 - mean) / std, channel-first.");

static PyObject *resize_normalize(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *src_obj, *mean_obj, *std_obj;
    Py_ssize_t out_h, out_w;
    if (!PyArg_ParseTuple(args, "OnnOO:resize_normalize", &src_obj, &out_h, &out_w, &mean_obj,
                          &std_obj))
        return NULL;
    if (out_h < 1 || out_w < 1 || out_h > (1 << 16) || out_w > (1 << 16)) {
        PyErr_Format(PyExc_ValueError, "target size must be in 1..65536, got %zdx%zd", out_h,
                     out_w);
        return NULL;
    }
    Job job;
    memset(&job, 0, sizeof(job));
    float mean[3], std[3];
    if (read_triple(mean_obj, "mean", mean) < 0 || read_triple(std_obj, "std", std) < 0)
        return NULL;
    for (int c = 0; c < 3; c++) {
        if (std[c] == 0.0f) {
            PyErr_Format(PyExc_ValueError, "std[%d] must be non-zero", c);
            return NULL;
        }
        job.m[c] = mean[c] * 255.0f;
        job.s[c] = std[c] * 255.0f;
    }

    Py_buffer view;
    if (PyObject_GetBuffer(src_obj, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        if (PyErr_ExceptionMatches(PyExc_BufferError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "rgb must be a C-contiguous HxWx3 uint8 buffer (e.g. "
                         "np.ascontiguousarray(img, dtype=np.uint8)); got %.100s that is not "
                         "one",
                         Py_TYPE(src_obj)->tp_name);
        }
        return NULL;
    }
    PyObject *result = NULL;
    Tap *xt = NULL, *yt = NULL;
    float *work = NULL;
    void *acc = NULL;
    const char *fmt = view.format != NULL ? view.format : "B";
    if (fmt[0] == '@' || fmt[0] == '=' || fmt[0] == '<' || fmt[0] == '>' || fmt[0] == '!') fmt++;
    if (view.itemsize != 1 || strcmp(fmt, "B") != 0) {
        PyErr_Format(PyExc_ValueError, "rgb must have dtype uint8 (format 'B'), got format '%s'",
                     view.format != NULL ? view.format : "B");
        goto done;
    }
    if (view.ndim != 3 || view.shape == NULL || view.shape[2] != 3) {
        if (view.ndim == 3 && view.shape != NULL)
            PyErr_Format(PyExc_ValueError,
                         "rgb must be HxWx3 (RGB, channel-last), got shape (%zd, %zd, %zd)",
                         view.shape[0], view.shape[1], view.shape[2]);
        else
            PyErr_Format(PyExc_ValueError, "rgb must be a 3-D HxWx3 array, got %d dimension(s)",
                         view.ndim);
        goto done;
    }
    const Py_ssize_t H = view.shape[0], W = view.shape[1];
    if (H < 1 || W < 1) {
        PyErr_Format(PyExc_ValueError, "rgb must not be empty, got shape (%zd, %zd, 3)", H, W);
        goto done;
    }
    if (out_h * out_w > PY_SSIZE_T_MAX / 12) {
        PyErr_NoMemory();
        goto done;
    }

    Py_ssize_t k = H / out_h < W / out_w ? H / out_h : W / out_w;
    if (k < 2) k = 1;
    const Py_ssize_t red_h = H / k, red_w = W / k;

    result = PyByteArray_FromStringAndSize(NULL, out_h * out_w * 3 * (Py_ssize_t)sizeof(float));
    if (result == NULL) goto done;
    xt = PyMem_Malloc(sizeof(Tap) * (size_t)out_w);
    yt = PyMem_Malloc(sizeof(Tap) * (size_t)out_h);
    /* work: the float source row, then two planar slots */
    work = PyMem_Malloc(sizeof(float) * (size_t)(red_w * 3 + 2 * 3 * out_w));
    if (k >= 2) {
        size_t esize = (k <= 257) ? sizeof(uint16_t) : sizeof(uint32_t);
        acc = PyMem_Malloc(esize * (size_t)(red_w * k * 3));
    }
    if (xt == NULL || yt == NULL || work == NULL || (k >= 2 && acc == NULL)) {
        Py_CLEAR(result);
        PyErr_NoMemory();
        goto done;
    }
    compute_taps(red_w, out_w, xt);
    compute_taps(red_h, out_h, yt);
    job.src = (const uint8_t *)view.buf;
    job.src_h = H;
    job.src_w = W;
    job.src_stride = W * 3;
    job.k = k;
    job.red_w = red_w;
    if (k >= 2) {
        if (k <= 257)
            job.acc16 = acc;
        else
            job.acc32 = acc;
    }
    job.row = work;
    job.slot[0] = work + red_w * 3;
    job.slot[1] = job.slot[0] + 3 * out_w;
    job.slot_row[0] = job.slot_row[1] = -1;
    job.out_h = out_h;
    job.out_w = out_w;
    job.xt = xt;
    job.yt = yt;
    job.out = (float *)PyByteArray_AS_STRING(result);

    Py_BEGIN_ALLOW_THREADS
    run_job(&job);
    Py_END_ALLOW_THREADS

done:
    PyMem_Free(acc);
    PyMem_Free(work);
    PyMem_Free(yt);
    PyMem_Free(xt);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef native_methods[] = {
    {"resize_normalize", resize_normalize, METH_VARARGS, resize_normalize_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    "_native",
    "vlmguard._native: fused image preprocessing (resize, normalise, HWC to CHW) in C.",
    -1,
    native_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
