/* The pcapng block walk of tracer/capture/pcapfile.py (_walk_pcapng), compiled: from word ``i``,
 * the word offset of every block, each next block at this one's length in words (a zero length
 * steps 3 words, so the walk never stalls). Lengths are validated afterwards, in pcapfile.py.
 *
 * Memory: reads only words [i, end) of the buffer it is given; writes at most len(out) starts. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define PREFETCH_WORDS 1024 /* 4 KiB: measured best of 256-4096 */

static void release(Py_buffer *views, int n) {
    while (n > 0) PyBuffer_Release(&views[--n]);
}

/* The buffers of ``objs``: C-contiguous, of the item size asked, writable where asked. On failure
 * every buffer got so far is released and -1 returned with the error set. */
static int acquire(const char *fn, int n, PyObject *const *objs, Py_buffer *views, const int *itemsize,
                   const int *writable) {
    for (int k = 0; k < n; k++) {
        if (PyObject_GetBuffer(objs[k], &views[k], (writable[k] ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            release(views, k);
            return -1;
        }
        if (views[k].itemsize != itemsize[k]) {
            PyErr_Format(PyExc_TypeError, "%s: argument %d has items of %zd bytes, not %d", fn, k + 1,
                         views[k].itemsize, itemsize[k]);
            release(views, k + 1);
            return -1;
        }
    }
    return 0;
}

/* walk(words, i, limit, end, out, types) -> (count, stop): blocks from word i that start before
 * word ``limit`` (and leave a type and length word before ``end``), their starts in ``out``
 * (int64) and their type words in ``types`` (uint32: the section headers are found by them)
 * until either is full; ``stop``: the word the walk stopped at (the next block's start). */
static PyObject *walk(PyObject *self, PyObject *args) {
    PyObject *obj[3];
    long long i, limit, end;
    if (!PyArg_ParseTuple(args, "OLLLOO", &obj[0], &i, &limit, &end, &obj[1], &obj[2])) return NULL;
    Py_buffer b[3];
    if (acquire("walk", 3, obj, b, (const int[]){4, 8, 4}, (const int[]){0, 1, 1}) < 0) return NULL;
    Py_buffer w = b[0], out = b[1], ty = b[2];
    const uint32_t *words = w.buf;
    int64_t *starts = out.buf;
    uint32_t *types = ty.buf;
    long long n = w.len / 4, room = out.len / 8, count = 0;
    if (ty.len / 4 < room) room = ty.len / 4;
    if (end > n) end = n;
    if (end < 0) end = 0; /* so end - 2 cannot overflow (no block either way) */
    long long last = end - 2; /* a block needs its type and length words */
    long long fetched = i;     /* cache lines prefetched from here on */
    Py_BEGIN_ALLOW_THREADS
    while (i >= 0 && i <= last && i < limit && count < room) {
        types[count] = words[i];
        starts[count++] = i;
        /* Each step's address depends on the word just read, which defeats the hardware
         * prefetcher: fetch the file's words a fixed distance ahead (the walk only goes forward). */
        if (fetched < i) fetched = i; /* after a long step: from here, not from where it was */
        for (long long ahead = i + PREFETCH_WORDS < end ? i + PREFETCH_WORDS : end; fetched < ahead; fetched += 16)
            __builtin_prefetch(&words[fetched]);
        uint32_t step = words[i + 1] >> 2;
        i += step ? step : 3;
    }
    Py_END_ALLOW_THREADS
    release(b, 3);
    return Py_BuildValue("LL", count, i);
}

/* heads(words, starts, out): for every block start, its first seven words (type, length and an
 * enhanced packet block's interface, timestamp and lengths) and its trailing length word, into
 * ``out`` (uint32, 8 per block). Words outside the buffer read as 0: a block within seven words
 * of the end has only its type and length, and a trailer is read only inside the block's first
 * start..end (pcapfile.py refuses a block whose length is impossible before it looks at either). */
static PyObject *heads(PyObject *self, PyObject *args) {
    PyObject *obj[3];
    if (!PyArg_ParseTuple(args, "OOO", &obj[0], &obj[1], &obj[2])) return NULL;
    Py_buffer b[3];
    if (acquire("heads", 3, obj, b, (const int[]){4, 8, 4}, (const int[]){0, 0, 1}) < 0) return NULL;
    Py_buffer w = b[0], st = b[1], out = b[2];
    PyObject *result = NULL;
    long long n = st.len / 8, nw = w.len / 4;
    if (out.len / 4 < 8 * n) {
        PyErr_SetString(PyExc_ValueError, "heads: 8 words of out a start");
        goto done;
    }
    const uint32_t *words = w.buf;
    const int64_t *starts = st.buf;
    uint32_t *o = out.buf;
    Py_BEGIN_ALLOW_THREADS
    for (long long k = 0; k < n; k++, o += 8) {
        if (k + 8 < n && starts[k + 8] >= 0 && starts[k + 8] < nw) __builtin_prefetch(&words[starts[k + 8]]);
        long long i = starts[k];
        for (int j = 0; j < 8; j++) o[j] = 0;
        if (i < 0 || i > nw - 2) continue; /* not i + 2 > nw: a start near INT64_MAX overflows */
        o[0] = words[i];
        o[1] = words[i + 1];
        if (i + 7 <= nw)
            for (int j = 2; j < 7; j++) o[j] = words[i + j];
        long long t = i + (long long)(words[i + 1] >> 2) - 1;
        if (t >= i && t < nw) o[7] = words[t];
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    release(b, 3);
    return result;
}

/* pcap(data, start, big_endian, out) -> (count, stop): a classic pcap's record header offsets
 * from byte ``start`` (24 at first; pcapfile.py's _walk_pcap): each next record 16 + its captured
 * length further, while a whole 16-byte header fits; ``stop`` is where the walk stopped (past the
 * end: the last record is cut). At most len(out) records a call: call again from ``stop``. */
static PyObject *pcap(PyObject *self, PyObject *args) {
    PyObject *obj[2];
    long long start;
    int big;
    if (!PyArg_ParseTuple(args, "OLpO", &obj[0], &start, &big, &obj[1])) return NULL;
    Py_buffer v[2];
    if (acquire("pcap", 2, obj, v, (const int[]){1, 8}, (const int[]){0, 1}) < 0) return NULL;
    Py_buffer d = v[0], out = v[1];
    const uint8_t *b = d.buf;
    long long at = start;
    int64_t *offs = out.buf;
    long long size = d.len, room = out.len / 8, count = 0, last = size - 16, fetched = at;
    Py_BEGIN_ALLOW_THREADS
    while (at >= 0 && at <= last && count < room) {
        offs[count++] = at;
        if (fetched < at) fetched = at;
        for (long long ahead = at + 4 * PREFETCH_WORDS < size ? at + 4 * PREFETCH_WORDS : size; fetched < ahead; fetched += 64)
            __builtin_prefetch(b + fetched);
        const uint8_t *c = b + at + 8;
        uint32_t caplen = big ? ((uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 | (uint32_t)c[2] << 8 | c[3])
                              : ((uint32_t)c[3] << 24 | (uint32_t)c[2] << 16 | (uint32_t)c[1] << 8 | c[0]);
        at += 16 + (long long)caplen;
    }
    Py_END_ALLOW_THREADS
    release(v, 2);
    return Py_BuildValue("LL", count, at);
}

/* scan(heads, other) -> (n_other, ok): over the blocks' heads (see heads()), whether every block
 * has a possible length (at least 12, a multiple of 4) that its trailer repeats (ok), and the
 * indexes of the blocks that are not enhanced packet blocks, in ``other`` (int64; n_other -1 when
 * they do not fit). pcapfile.py decodes such a run with epbs(); anything else takes numpy's way. */
static PyObject *scan(PyObject *self, PyObject *args) {
    PyObject *obj[2];
    if (!PyArg_ParseTuple(args, "OO", &obj[0], &obj[1])) return NULL;
    Py_buffer b[2];
    if (acquire("scan", 2, obj, b, (const int[]){4, 8}, (const int[]){0, 1}) < 0) return NULL;
    Py_buffer h = b[0], ot = b[1];
    PyObject *result = NULL;
    if (h.len % 32) {
        PyErr_SetString(PyExc_ValueError, "scan: heads of 8 words a block");
        goto done;
    }
    const uint32_t *hd = h.buf;
    int64_t *other = ot.buf;
    long long n = h.len / 32, room = ot.len / 8, n_other = 0;
    int ok = 1;
    for (long long k = 0; k < n; k++, hd += 8) {
        uint32_t len = hd[1];
        if (len < 12 || len % 4 || hd[7] != len) {
            ok = 0;
            break;
        }
        if (hd[0] != 6) {
            if (n_other == room) {
                n_other = -1;
                break;
            }
            other[n_other++] = k;
        }
    }
    result = Py_BuildValue("Li", n_other, ok);
done:
    release(b, 2);
    return result;
}

/* epbs(heads, starts, shb, sec, sec_base, sec_count, max_caplen, data, caplen, wire, ticks, gif)
 * -> bad: the enhanced packet blocks among ``heads`` (every other block skipped), decoded as
 * pcapfile.py's _Decoder does: data offset, captured and wire length, timestamp ticks and global
 * interface number. ``shb``: ascending indexes of the section header blocks among them (the
 * section number starts at ``sec`` and goes up by one at each); ``sec_base``/``sec_count``: each
 * section's first interface and interfaces. bad: the first block (index into heads) too short, of
 * an unknown section or interface, or holding more than it may (numpy's way then says which), or
 * -1; the outputs then hold one entry per enhanced packet block, in order. */
static PyObject *epbs(PyObject *self, PyObject *args) {
    PyObject *obj[10];
    long long sec, max_caplen;
    if (!PyArg_ParseTuple(args, "OOOLOOLOOOOO", &obj[0], &obj[1], &obj[2], &sec, &obj[3], &obj[4], &max_caplen, &obj[5], &obj[6],
                          &obj[7], &obj[8], &obj[9]))
        return NULL;
    static const int item[10] = {4, 8, 8, 8, 8, 8, 8, 4, 8, 8};
    static const int out[10] = {0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
    Py_buffer b[10];
    PyObject *result = NULL;
    if (acquire("epbs", 10, obj, b, item, out) < 0) return NULL;
    long long n = b[0].len / 32, nshb = b[2].len / 8, nsec = b[3].len / 8;
    if (b[0].len % 32 || b[1].len / 8 != n || b[4].len / 8 != nsec) {
        PyErr_SetString(PyExc_ValueError, "epbs: heads, starts and sections differ in length");
        goto done;
    }
    {
        const uint32_t *hd = b[0].buf;
        const int64_t *st = b[1].buf, *shb = b[2].buf, *base = b[3].buf, *count = b[4].buf;
        int64_t *data = b[5].buf, *caplen = b[6].buf, *ticks_signed = b[8].buf, *gif = b[9].buf;
        uint32_t *wire = b[7].buf;
        long long room = b[5].len / 8, j = 0, next_shb = 0, bad = -1;
        for (int q = 6; q < 10; q++) /* every output holds as many as the first */
            if (b[q].len / b[q].itemsize < room) room = b[q].len / b[q].itemsize;
        for (long long k = 0; k < n; k++, hd += 8) {
            while (next_shb < nshb && shb[next_shb] <= k) { /* a section header at or before k */
                sec++;
                next_shb++;
            }
            if (hd[0] != 6) continue;
            uint32_t len = hd[1];
            long long ifid = hd[2], cap = hd[5];
            if (len < 32 || sec < 0 || sec >= nsec || ifid >= count[sec] || cap > (long long)len - 32 ||
                cap > max_caplen || j >= room || st[k] < 0 || st[k] > (INT64_MAX - 28) / 4) {
                bad = k;
                break;
            }
            data[j] = st[k] * 4 + 28;
            caplen[j] = cap;
            wire[j] = hd[6];
            ticks_signed[j] = (int64_t)(((uint64_t)hd[3] << 32) | hd[4]);
            gif[j] = base[sec] + ifid;
            j++;
        }
        result = Py_BuildValue("LL", bad, j);
    }
done:
    release(b, 10);
    return result;
}

static PyMethodDef methods[] = {
    {"walk", walk, METH_VARARGS, "Word offsets of pcapng blocks (see tracer.capture.pcapfile)."},
    {"heads", heads, METH_VARARGS, "Header and trailer words of pcapng blocks (see tracer.capture.pcapfile)."},
    {"pcap", pcap, METH_VARARGS, "Record offsets of a classic pcap (see tracer.capture.pcapfile)."},
    {"scan", scan, METH_VARARGS, "Length checks and non-EPB blocks of a run of pcapng blocks (see tracer.capture.pcapfile)."},
    {"epbs", epbs, METH_VARARGS, "Enhanced packet blocks decoded (see tracer.capture.pcapfile)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_walk", .m_doc = "Compiled pcapng block walk.",
                                    .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__walk(void) { return PyModule_Create(&module); }
