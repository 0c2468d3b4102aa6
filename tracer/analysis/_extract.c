/* Identity extraction, one pass per frame: the compiled form of tracer/analysis/extract.py.
 *
 * extract.py's numpy code is the reference: this file computes the same columns with the same
 * rules (its docstrings say why each rule exists), row by row instead of column by column, so a
 * frame's bytes are read once while in cache. tests/test_extract_native.py compares the two on
 * every capture in the repository and on random and mutated frames; keep them in step.
 *
 * Hostile input: every byte is read through get8(), which returns 0 outside the frame (its
 * captured length, clipped to the buffer), so no offset or length in a file can make this code
 * read outside the buffer it was given. Fields the frame does not cover are left 0, as in
 * extract.py (there, bytes past the frame may be read but every such field is masked).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define PREFETCH_FRAMES 8 /* measured: 4-16 alike, 2x faster than none */

/* Output columns, in the order extract.py's NATIVE_COLUMNS passes them, with their item sizes. */
enum {
    C_L3_OFF, C_IPVER, C_SRC, C_DST, C_PROTO, C_IP_LEN, C_IPID, C_TTL, C_DF, C_FRAG, C_MF,
    C_SPORT, C_DPORT, C_L4_HASH, C_CLS, C_ICMP_TYPE, C_ICMP_CODE, C_ICMP_ID, C_ICMP_SEQ,
    C_TAG_KIND, C_TAG_RUN, C_TAG_SEQ, C_SPI, C_ESP_SEQ, C_UDP_ENCAP, C_IKE_SPI_I, C_IKE_SPI_R,
    C_IKE_EXCH, C_IKE_FLAGS, C_INNER_SRC, C_INNER_DST, C_INNER_PROTO, C_INNER_ID, C_INNER_SEQ,
    C_MTU, N_COLS
};
static const int ITEMSIZE[N_COLS] = {
    8, 1, 4, 4, 1, 2, 2, 1, 1, 2, 1,
    2, 2, 4, 1, 1, 1, 2, 2,
    1, 4, 4, 4, 4, 1, 8, 8,
    1, 1, 4, 4, 1, 2, 2,
    2,
};

/* Constants handed in by extract.py (PacketClass values, tag magic and check words). */
typedef struct {
    uint8_t echo_request, echo_reply, icmp_error, udp, tcp, esp, nat_keepalive, ike, fragment;
    uint32_t tag_magic, magic_sum, check_xor, ike_magic;
} Params;

typedef struct {
    void *col[N_COLS];
    Params p;
} Out;

#define PUT(o, c, T, i, v) (((T *)(o)->col[c])[i] = (T)(v))

/* A frame: its bytes and how many of them may be read. */
typedef struct {
    const uint8_t *b;
    int64_t len;
} Frame;

static inline uint32_t get8(Frame f, int64_t at) { return (at >= 0 && at < f.len) ? f.b[at] : 0; }

static inline uint32_t be16(Frame f, int64_t at) {
    if (at >= 0 && at + 2 <= f.len) return ((uint32_t)f.b[at] << 8) | f.b[at + 1];
    return (get8(f, at) << 8) | get8(f, at + 1);
}

static inline uint32_t be32(Frame f, int64_t at) {
    if (at >= 0 && at + 4 <= f.len)
        return ((uint32_t)f.b[at] << 24) | ((uint32_t)f.b[at + 1] << 16) | ((uint32_t)f.b[at + 2] << 8) | f.b[at + 3];
    return (get8(f, at) << 24) | (get8(f, at + 1) << 16) | (get8(f, at + 2) << 8) | get8(f, at + 3);
}

static inline uint64_t be64(Frame f, int64_t at) { return ((uint64_t)be32(f, at) << 32) | be32(f, at + 4); }

static inline Frame sub(Frame f, int64_t at) {
    Frame s = {f.b, 0};
    if (at >= 0 && at <= f.len) {
        s.b = f.b + at;
        s.len = f.len - at;
    }
    return s;
}

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static const uint32_t MIX[4] = {0x9E3779B1u, 0x85EBCA77u, 0xC2B2AE3Du, 0x27D4EB2Fu};

static void tag(Out *o, Py_ssize_t i, uint32_t kind, uint32_t run, uint32_t seq) {
    PUT(o, C_TAG_KIND, uint8_t, i, kind);
    PUT(o, C_TAG_RUN, uint32_t, i, run);
    PUT(o, C_TAG_SEQ, uint32_t, i, seq);
}

/* An IKE header at the start of ``h``, ``cap`` bytes of it captured (extract.py: _ike). */
static void ike(Out *o, Py_ssize_t i, Frame h, int64_t cap) {
    uint64_t spi_i = cap >= 8 ? be64(h, 0) : 0;
    PUT(o, C_IKE_SPI_I, uint64_t, i, spi_i);
    PUT(o, C_IKE_SPI_R, uint64_t, i, cap >= 16 ? be64(h, 8) : 0);
    PUT(o, C_IKE_EXCH, uint8_t, i, cap >= 20 ? get8(h, 18) : 0);
    PUT(o, C_IKE_FLAGS, uint8_t, i, cap >= 20 ? get8(h, 19) : 0);
    uint32_t kind = (uint32_t)(spi_i >> 48) & 0xFF;
    if ((spi_i >> 56) == o->p.ike_magic && kind != 0)
        tag(o, i, kind, (uint32_t)(spi_i >> 16), (uint32_t)(spi_i & 0xFFFF));
}

/* An IPv4 packet at the start of ``f`` (``avail`` = f.len bytes captured from its header on),
 * ``l3abs`` its offset in the buffer; ``inner``: quoted by an ICMP error (extract.py: _ipv4). */
static void ipv4(Out *o, Py_ssize_t i, Frame f, int64_t l3abs, int inner) {
    const Params *p = &o->p;
    int64_t avail = f.len;
    uint32_t vihl = get8(f, 0);
    int64_t ihl = (int64_t)(vihl & 0x0F) * 4;
    if ((vihl >> 4) != 4 || ihl < 20 || avail < ihl) return;
    uint32_t word0 = be32(f, 0), word1 = be32(f, 4);
    int64_t ip_len = word0 & 0xFFFF;
    uint32_t proto = get8(f, 9);
    uint32_t frag = word1 & 0x1FFF;
    int64_t lim;
    if (inner) {
        lim = avail;
        PUT(o, C_INNER_SRC, uint32_t, i, be32(f, 12));
        PUT(o, C_INNER_DST, uint32_t, i, be32(f, 16));
        PUT(o, C_INNER_PROTO, uint8_t, i, proto);
    } else {
        lim = ip_len >= ihl ? min64(avail, ip_len) : avail;
        PUT(o, C_IPVER, uint8_t, i, 4);
        PUT(o, C_L3_OFF, int64_t, i, l3abs);
        PUT(o, C_SRC, uint32_t, i, be32(f, 12));
        PUT(o, C_DST, uint32_t, i, be32(f, 16));
        PUT(o, C_PROTO, uint8_t, i, proto);
        PUT(o, C_IP_LEN, uint16_t, i, ip_len);
        PUT(o, C_IPID, uint16_t, i, word1 >> 16);
        PUT(o, C_TTL, uint8_t, i, get8(f, 8));
        PUT(o, C_DF, uint8_t, i, (word1 & 0x4000) != 0);
        PUT(o, C_MF, uint8_t, i, (word1 & 0x2000) != 0);
        PUT(o, C_FRAG, uint16_t, i, frag);
    }
    int64_t cap = lim - ihl; /* L4 bytes that may be read */
    Frame l4 = sub(f, ihl);
    uint32_t w0 = be32(l4, 0), w1 = be32(l4, 4), w2 = be32(l4, 8), w3 = be32(l4, 12);
    int first = frag == 0;
    int is_icmp = first && proto == 1 && cap >= 1;
    int is_udp = first && proto == 17, is_tcp = first && proto == 6, is_esp = first && proto == 50;
    uint32_t cls = 0;

    /* ICMP: type/code, frag-needed MTU, the probe tag at offset 8 */
    uint32_t typ = w0 >> 24, code = (w0 >> 16) & 0xFF;
    int is_echo = is_icmp && (typ == 8 || typ == 0);
    int echo = is_echo && cap >= 8;
    int err = is_icmp && (typ == 3 || typ == 11 || typ == 12);
    if (!inner) {
        PUT(o, C_ICMP_TYPE, uint8_t, i, is_icmp ? typ : 0);
        PUT(o, C_ICMP_CODE, uint8_t, i, (is_icmp && cap >= 2) ? code : 0);
        if (is_echo && typ == 8) cls = p->echo_request;
        if (is_echo && typ == 0) cls = p->echo_reply;
        if (err) cls = p->icmp_error;
        PUT(o, C_MTU, uint16_t, i, (is_icmp && typ == 3 && code == 4 && cap >= 8) ? (w1 & 0xFFFF) : 0);
    }
    if (echo && cap >= 8 + 16 && w2 == p->tag_magic) {
        uint32_t b4 = w3, b5 = be32(l4, 16), b6 = be32(l4, 20);
        uint32_t words = p->magic_sum + (b4 >> 16) + (b4 & 0xFFFF) + (b5 >> 16) + (b5 & 0xFFFF) + (b6 >> 16);
        uint32_t kind = b4 >> 24;
        if (((words & 0xFFFF) ^ p->check_xor) == (b6 & 0xFFFF) && kind != 0)
            tag(o, i, kind, ((b4 & 0xFFFF) << 16) | (b5 >> 16), ((b5 & 0xFFFF) << 16) | (b6 >> 16));
    }

    /* UDP, TCP, ESP (raw or in UDP 4500), NAT-T keepalives, IKE on 500 and 4500 */
    int ports = (is_udp || is_tcp) && cap >= 4;
    uint32_t sport = w0 >> 16, dport = w0 & 0xFFFF;
    int64_t ulen = cap >= 6 ? (int64_t)(w1 >> 16) : 0;
    int64_t plen = ulen >= 8 ? ulen - 8 : cap - 8;
    int natt = is_udp && cap >= 4 && (sport == 4500 || dport == 4500);
    int keepalive = natt && plen == 1 && cap >= 9 && (w2 >> 24) == 0xFF;
    int marker = natt && plen >= 4 + 28 && cap >= 12 && w2 == 0;
    int espu = natt && !keepalive && cap >= 12 && w2 != 0 && plen >= 8;
    int ike500 = is_udp && cap >= 4 && !natt && (sport == 500 || dport == 500) && plen >= 28;
    uint32_t spi = (is_esp && cap >= 4) ? w0 : (espu ? w2 : 0);
    uint32_t seq = (is_esp && cap >= 8) ? w1 : ((espu && cap >= 16) ? w3 : 0);
    if (!inner || is_esp || espu) {
        PUT(o, C_SPI, uint32_t, i, spi);
        PUT(o, C_ESP_SEQ, uint32_t, i, seq);
        PUT(o, C_UDP_ENCAP, uint8_t, i, espu);
    }
    if (!inner) {
        if (is_udp) cls = p->udp;
        if (is_tcp) cls = p->tcp;
        if (is_esp || espu) cls = p->esp;
        if (keepalive) cls = p->nat_keepalive;
        if (marker || ike500) cls = p->ike;
    }
    if (ike500) ike(o, i, sub(l4, 8), cap - 8);
    if (marker) ike(o, i, sub(l4, 12), cap - 12);

    /* echo id/seq and ports share the two id columns of a quoted packet */
    uint32_t ident = echo ? w1 >> 16 : 0, eseq = echo ? w1 & 0xFFFF : 0;
    if (!ports) sport = dport = 0;
    if (inner) {
        PUT(o, C_INNER_ID, uint16_t, i, ident | sport);
        PUT(o, C_INNER_SEQ, uint16_t, i, eseq | dport);
        return;
    }
    PUT(o, C_ICMP_ID, uint16_t, i, ident);
    PUT(o, C_ICMP_SEQ, uint16_t, i, eseq);
    PUT(o, C_SPORT, uint16_t, i, sport);
    PUT(o, C_DPORT, uint16_t, i, dport);

    /* l4_hash: see extract.py's _l4_hash for what is hashed and why */
    uint32_t x[4] = {(is_udp || is_tcp) ? 0 : (is_icmp ? (w0 & 0xFFFF0000u) : w0), is_udp ? (w1 & 0xFFFF0000u) : w1, w2, w3};
    uint32_t h = 0;
    for (int k = 0; k < 4; k++) {
        if (cap < 16) {
            int64_t covered = cap - 4 * k;
            covered = covered < 0 ? 0 : (covered > 4 ? 4 : covered);
            x[k] &= (uint32_t)((0xFFFFFFFF00000000ull >> (covered * 8)) & 0xFFFFFFFFull);
        }
        h ^= x[k] * MIX[k];
    }
    h ^= h >> 16;
    int64_t need = ip_len - ihl < 16 ? ip_len - ihl : 16;
    PUT(o, C_L4_HASH, uint32_t, i, (first && cap >= need) ? h : 0);
    PUT(o, C_CLS, uint8_t, i, frag > 0 ? p->fragment : cls);
    if (err && cap >= 8 + 20) /* the packet the error quotes, right after the 8-byte ICMP header */
        ipv4(o, i, (Frame){l4.b + 8, cap - 8}, l3abs + ihl + 8, 1);
}

/* One frame of link type ``lt``: find L3, then parse IP (extract.py: _frames). */
static void frame(Out *o, Py_ssize_t i, Frame f, int64_t off, int64_t lt) {
    int64_t cap = f.len, l3;
    int want; /* IP version the link layer announces; 5: either */
    switch (lt) {
    case 1: case 113: case 276: {
        int64_t proto_at = lt == 1 ? 12 : (lt == 113 ? 14 : 0);
        l3 = lt == 1 ? 14 : (lt == 113 ? 16 : 20);
        uint32_t et = cap >= proto_at + 2 ? be16(f, proto_at) : 0;
        for (int k = 0; k < 2; k++) { /* 802.1Q, QinQ: each tag is a TCI plus the next ethertype */
            if (et != 0x8100 && et != 0x88A8 && et != 0x9100) break;
            if (cap >= l3 + 4) {
                l3 += 4;
                et = be16(f, l3 - 2);
            } else {
                et = 0;
            }
        }
        want = et == 0x0800 ? 4 : (et == 0x86DD ? 6 : 0);
        break;
    }
    case 0: case 108: {
        uint32_t fam = lt == 108 ? be32(f, 0) : (get8(f, 0) | (get8(f, 1) << 8) | (get8(f, 2) << 16) | (get8(f, 3) << 24));
        if (lt == 0 && fam > 0xFFFF) /* host order of the capturing machine: either */
            fam = ((fam & 0xFF) << 24) | ((fam & 0xFF00) << 8) | ((fam >> 8) & 0xFF00) | (fam >> 24);
        l3 = 4;
        want = cap < 4 ? 0 : (fam == 2 ? 4 : ((fam == 10 || fam == 24 || fam == 28 || fam == 30) ? 6 : 0));
        break;
    }
    case 12: case 14: case 101: l3 = 0; want = 5; break;
    case 228: l3 = 0; want = 4; break;
    case 229: l3 = 0; want = 6; break;
    default: return; /* not a link type we read: a non-IP row */
    }
    int64_t avail = cap - l3;
    uint32_t ver = get8(f, l3) >> 4;
    if (ver == 6 && (want == 6 || want == 5) && avail >= 40) {
        PUT(o, C_IPVER, uint8_t, i, 6);
        PUT(o, C_L3_OFF, int64_t, i, off + l3);
    }
    if (ver == 4 && (want == 4 || want == 5) && avail >= 20) ipv4(o, i, sub(f, l3), off + l3, 0);
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(obj, view, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (itemsize && view->itemsize != itemsize) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes, need %zd", what, view->itemsize, itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* frames(buf, data_off, caplen, linktype, lts, cols, params): see extract.py's _native. */
static PyObject *frames(PyObject *self, PyObject *args) {
    PyObject *buf_o, *off_o, *cap_o, *lts_o, *cols_o, *par_o;
    long long linktype;
    if (!PyArg_ParseTuple(args, "OOOLOOO", &buf_o, &off_o, &cap_o, &linktype, &lts_o, &cols_o, &par_o)) return NULL;
    if (!PyTuple_Check(cols_o) || PyTuple_GET_SIZE(cols_o) != N_COLS) {
        PyErr_SetString(PyExc_TypeError, "cols: a tuple of the output columns");
        return NULL;
    }
    Out o;
    unsigned int pv[13];
    if (!PyArg_ParseTuple(par_o, "IIIIIIIIIIIII", &pv[0], &pv[1], &pv[2], &pv[3], &pv[4], &pv[5], &pv[6], &pv[7],
                          &pv[8], &pv[9], &pv[10], &pv[11], &pv[12]))
        return NULL;
    o.p = (Params){pv[0], pv[1], pv[2], pv[3], pv[4], pv[5], pv[6], pv[7], pv[8], pv[9], pv[10], pv[11], pv[12]};
    Py_buffer buf, off, cap, lts, cols[N_COLS];
    int have_lts = lts_o != Py_None, got = 0;
    PyObject *result = NULL;
    if (get_buffer(buf_o, &buf, 0, 1, "buf") < 0) return NULL;
    if (get_buffer(off_o, &off, 0, 8, "data_off") < 0) goto release_buf;
    if (get_buffer(cap_o, &cap, 0, 0, "caplen") < 0) goto release_off;
    if (cap.itemsize != 4 && cap.itemsize != 8) {
        PyErr_SetString(PyExc_TypeError, "caplen: uint32 or int64 items");
        goto release_cap;
    }
    if (have_lts && get_buffer(lts_o, &lts, 0, 4, "lts") < 0) goto release_cap;
    Py_ssize_t n = off.len / 8;
    if (cap.len / cap.itemsize != n || (have_lts && lts.len / 4 != n)) {
        PyErr_SetString(PyExc_ValueError, "data_off, caplen and lts differ in length");
        goto release;
    }
    for (; got < N_COLS; got++) {
        if (get_buffer(PyTuple_GET_ITEM(cols_o, got), &cols[got], 1, ITEMSIZE[got], "column") < 0) goto release;
        if (cols[got].len / ITEMSIZE[got] < n) {
            got++;
            PyErr_SetString(PyExc_ValueError, "an output column is shorter than the frames");
            goto release;
        }
        o.col[got] = cols[got].buf;
    }
    {
        const uint8_t *b = buf.buf;
        int64_t blen = buf.len;
        const int64_t *offs = off.buf;
        const int32_t *lt32 = have_lts ? lts.buf : NULL;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < n; i++) {
            if (i + PREFETCH_FRAMES < n) { /* the headers of a frame a few ahead: hide memory latency */
                int64_t ahead = offs[i + PREFETCH_FRAMES];
                if (ahead >= 0 && ahead <= blen - 128) { /* not ahead + 128: a hostile offset near INT64_MAX overflows */
                    __builtin_prefetch(b + ahead);
                    __builtin_prefetch(b + ahead + 64);
                }
            }
            int64_t at = offs[i];
            int64_t c = cap.itemsize == 4 ? (int64_t)((const uint32_t *)cap.buf)[i] : ((const int64_t *)cap.buf)[i];
            Frame f = {b, 0};
            if (at >= 0 && at < blen && c > 0) { /* a frame past the buffer's end is cut there */
                f.b = b + at;
                f.len = min64(c, blen - at);
            }
            frame(&o, i, f, at, lt32 ? lt32[i] : linktype);
        }
        Py_END_ALLOW_THREADS
    }
    result = Py_None;
    Py_INCREF(result);
release:
    while (got > 0) PyBuffer_Release(&cols[--got]);
    if (have_lts) PyBuffer_Release(&lts);
release_cap:
    PyBuffer_Release(&cap);
release_off:
    PyBuffer_Release(&off);
release_buf:
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef methods[] = {
    {"frames", frames, METH_VARARGS, "Fill the observation columns of the given frames (see tracer.analysis.extract)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_extract", .m_doc = "Compiled identity extraction.",
                                    .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__extract(void) { return PyModule_Create(&module); }
