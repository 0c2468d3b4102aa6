/* The pcapng block walk of tracer/capture/pcapfile.py (_walk_pcapng), compiled: from word ``i``,
 * the word offset of every block, each next block at this one's length in words (a zero length
 * steps 3 words, so the walk never stalls). Lengths are validated afterwards, in pcapfile.py.
 *
 * Memory: reads only words [i, end) of the buffer it is given; writes at most len(out) starts. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define PREFETCH_WORDS 1024 /* 4 KiB: measured best of 256-4096 */

/* walk(words, i, limit, end, out) -> (count, stop): blocks from word i that start before word
 * ``limit`` (and leave a type and length word before ``end``), their starts in ``out`` (int64)
 * until it is full; ``stop``: the word the walk stopped at (the next block's start). */
static PyObject *walk(PyObject *self, PyObject *args) {
    PyObject *w_o, *out_o;
    long long i, limit, end;
    if (!PyArg_ParseTuple(args, "OLLLO", &w_o, &i, &limit, &end, &out_o)) return NULL;
    Py_buffer w, out;
    if (PyObject_GetBuffer(w_o, &w, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (PyObject_GetBuffer(out_o, &out, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&w);
        return NULL;
    }
    if (w.itemsize != 4 || out.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "walk: uint32 words, int64 starts");
        PyBuffer_Release(&w);
        PyBuffer_Release(&out);
        return NULL;
    }
    const uint32_t *words = w.buf;
    int64_t *starts = out.buf;
    long long n = w.len / 4, room = out.len / 8, count = 0;
    if (end > n) end = n;
    long long last = end - 2; /* a block needs its type and length words */
    long long fetched = i;     /* cache lines prefetched from here on */
    Py_BEGIN_ALLOW_THREADS
    while (i >= 0 && i <= last && i < limit && count < room) {
        starts[count++] = i;
        /* Each step's address depends on the word just read, which defeats the hardware
         * prefetcher: fetch the file's words a fixed distance ahead (the walk only goes forward). */
        for (long long ahead = i + PREFETCH_WORDS < end ? i + PREFETCH_WORDS : end; fetched < ahead; fetched += 16)
            __builtin_prefetch(&words[fetched]);
        uint32_t step = words[i + 1] >> 2;
        i += step ? step : 3;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&w);
    PyBuffer_Release(&out);
    return Py_BuildValue("LL", count, i);
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "Word offsets of pcapng blocks (see tracer.capture.pcapfile)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_walk", .m_doc = "Compiled pcapng block walk.",
                                    .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
