/*
 * SRTP packet I/O for the forward path: the per-copy work done in C.
 *
 * A forwarded packet leaves once per subscriber. In Python each copy cost a header rewrite
 * (several slice copies), a cffi call into libsrtp and a socket.sendto that re-parses the
 * address: about half of the server's user time. Here one call rewrites the header
 * (RFC 3550 §5.1, RFC 8285 extension block), protects the packet in place (RFC 3711 §3.1)
 * and writes it to the socket.
 *
 * libsrtp is the one pylibsrtp bundles: sfu/media/srtp.py hands over the addresses of its
 * srtp_protect/srtp_unprotect functions and of the session's context, so this module links
 * against nothing. Every decision (which packets, which numbers) stays in Python.
 *
 * Single-threaded by design: the event loop runs one packet at a time, so one static buffer
 * serves every connection of the process and no call holds it across another.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "_pacer.h"
#include "_sendbatch.h"
#include "_transport_cc.h"

/* must match sfu/media/srtp.py */
#define MAX_PACKET 2048
/* libsrtp's worst-case trailer: SRTCP index, tag, MKI */
#define TRAILER (4 + 16 + 128)

typedef int (*srtp_fn)(void *ctx, void *packet, int *length);

static unsigned char egress_buffer[MAX_PACKET + TRAILER];

/* --- SrtpSession: one direction of a DTLS-SRTP session --- */

typedef struct {
    PyObject_HEAD
    PyObject *owner; /* keeps libsrtp's context alive (the pylibsrtp.Session) */
    void *ctx;
    srtp_fn protect_rtp;
    srtp_fn protect_rtcp;
    srtp_fn unprotect_rtp;
    srtp_fn unprotect_rtcp;
} SrtpSession;

static void *
address_of(PyObject *value)
{
    void *pointer = PyLong_AsVoidPtr(value);
    if (pointer == NULL && !PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "a null address");
    return pointer;
}

static int
SrtpSession_init(SrtpSession *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"owner", "ctx", "protect_rtp", "protect_rtcp",
                               "unprotect_rtp", "unprotect_rtcp", NULL};
    PyObject *owner, *ctx, *p_rtp, *p_rtcp, *u_rtp, *u_rtcp;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOO", keywords, &owner, &ctx, &p_rtp,
                                     &p_rtcp, &u_rtp, &u_rtcp))
        return -1;
    if (!(self->ctx = address_of(ctx)) ||
        !(self->protect_rtp = (srtp_fn)address_of(p_rtp)) ||
        !(self->protect_rtcp = (srtp_fn)address_of(p_rtcp)) ||
        !(self->unprotect_rtp = (srtp_fn)address_of(u_rtp)) ||
        !(self->unprotect_rtcp = (srtp_fn)address_of(u_rtcp)))
        return -1;
    Py_INCREF(owner);
    Py_XSETREF(self->owner, owner);
    return 0;
}

static void
SrtpSession_dealloc(SrtpSession *self)
{
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A new bytes object with the decrypted packet, or None (forged, replayed, not ours, oversize). */
static PyObject *
unprotect(SrtpSession *self, PyObject *data, srtp_fn function)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size > MAX_PACKET || self->ctx == NULL)
        Py_RETURN_NONE;
    /* decrypted where it will be kept: a fresh bytes object nobody else has seen yet */
    PyObject *packet = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), size);
    if (packet == NULL)
        return NULL;
    int length = (int)size;
    if (function(self->ctx, PyBytes_AS_STRING(packet), &length) != 0 || length < 0 ||
        length > size) {
        Py_DECREF(packet);
        Py_RETURN_NONE;
    }
    if (length < size && _PyBytes_Resize(&packet, length) < 0)
        return NULL;
    return packet;
}

static PyObject *
SrtpSession_unprotect_rtp(SrtpSession *self, PyObject *data)
{
    return unprotect(self, data, self->unprotect_rtp);
}

static PyObject *
SrtpSession_unprotect_rtcp(SrtpSession *self, PyObject *data)
{
    return unprotect(self, data, self->unprotect_rtcp);
}

static PyMethodDef SrtpSession_methods[] = {
    {"unprotect_rtp", (PyCFunction)SrtpSession_unprotect_rtp, METH_O,
     "The decrypted RTP packet, or None if it fails authentication or the replay check."},
    {"unprotect_rtcp", (PyCFunction)SrtpSession_unprotect_rtcp, METH_O,
     "The decrypted RTCP compound packet, or None."},
    {NULL},
};

static PyTypeObject SrtpSessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu.media._packetio.SrtpSession",
    .tp_doc = "One direction of a DTLS-SRTP session, by the addresses of libsrtp's functions.",
    .tp_basicsize = sizeof(SrtpSession),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SrtpSession_init,
    .tp_dealloc = (destructor)SrtpSession_dealloc,
    .tp_methods = SrtpSession_methods,
};

/* --- Egress: protect and send to one ICE pair --- */

typedef struct {
    PyObject_HEAD
    SrtpSession *srtp;
    PyObject *relay; /* callable taking the protected bytes, when there is no socket */
    int fd;          /* owned: a duplicate of the ICE socket's descriptor, or -1 */
    unsigned long socket_inode; /* which socket fd is (SendBatch groups by it) */
    struct sockaddr_storage addr;
    socklen_t addr_length;
    unsigned long long packets_sent;
    unsigned long long bytes_sent;
    unsigned long long send_errors;
    TccState tcc;      /* transport-wide numbering and send records (_transport_cc.c) */
    int tcc_id;        /* the negotiated transport-wide sequence number element; 0: none */
    int probe_cluster; /* packets sent while it is >= 0 belong to that probe cluster */
    Pacer pacer;       /* RTP beyond the pacing rate waits here for drain() (_pacer.c) */
    PyObject *on_paced; /* called when a packet is queued into an empty pacer: arm drain() */
    SendBatch *batch;   /* the shared port's: sends between its begin() and flush() queue there */
} Egress;

static PyObject *
Egress_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Egress *self = (Egress *)PyType_GenericNew(type, args, kwds);
    if (self != NULL) {
        self->fd = -1; /* not 0: that is stdin, which close() must never see */
        self->probe_cluster = -1;
    }
    return (PyObject *)self;
}

/* Before the descriptor closes or changes: the batch's slots borrow it. */
static void
Egress_flush_batch(Egress *self)
{
    if (self->batch != NULL && self->batch->count > 0) {
        int collecting = self->batch->collecting;
        batch_flush(self->batch);
        self->batch->collecting = collecting;
    }
}

static void
Egress_close_fd(Egress *self)
{
    Egress_flush_batch(self);
    if (self->fd >= 0) {
        close(self->fd);
        self->fd = -1;
    }
}

static int
Egress_init(Egress *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"srtp", "fd", "host", "port", "relay", "batch", NULL};
    SrtpSession *srtp;
    int fd, port;
    const char *host;
    PyObject *relay, *batch = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!isiO|O", keywords, &SrtpSessionType, &srtp,
                                     &fd, &host, &port, &relay, &batch))
        return -1;
    if (batch != Py_None && !PyObject_TypeCheck(batch, &SendBatchType)) {
        PyErr_SetString(PyExc_TypeError, "batch must be a SendBatch or None");
        return -1;
    }
    if (fd < 0 && relay == Py_None) {
        PyErr_SetString(PyExc_ValueError, "an egress needs a socket or a relay");
        return -1;
    }
    memset(&self->addr, 0, sizeof(self->addr));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&self->addr;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
            goto bad_address;
        self->addr_length = sizeof(*in6);
    } else {
        struct sockaddr_in *in4 = (struct sockaddr_in *)&self->addr;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &in4->sin_addr) != 1)
            goto bad_address;
        self->addr_length = sizeof(*in4);
    }
    Py_INCREF(srtp);
    Py_XSETREF(self->srtp, srtp);
    Py_INCREF(relay);
    Py_XSETREF(self->relay, relay);
    struct stat status;
    if (fd >= 0 && batch != Py_None && fstat(fd, &status) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Egress_close_fd(self);
    self->fd = fd;
    self->socket_inode = fd >= 0 && batch != Py_None ? (unsigned long)status.st_ino : 0;
    Py_XSETREF(self->batch, batch == Py_None ? NULL : (SendBatch *)Py_NewRef(batch));
    return 0;
bad_address:
    PyErr_Format(PyExc_ValueError, "not a numeric IP address: %s", host);
    return -1;
}

static void
Egress_dealloc(Egress *self)
{
    Egress_close_fd(self);
    tcc_free(&self->tcc);
    pacer_free(&self->pacer);
    Py_XDECREF(self->on_paced);
    Py_XDECREF(self->batch);
    Py_XDECREF(self->srtp);
    Py_XDECREF(self->relay);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Protect the size bytes at egress_buffer and send them; an RTP packet that carries the
 * transport-wide sequence number element gets its number first. Counts rather than raises: a
 * full socket buffer drops the packet, as a router would. NULL only when the relay raised. */
static PyObject *
send_now(Egress *self, int size, int rtcp)
{
    int length = size;
    Py_ssize_t tcc_at = -1;
    if (!rtcp && self->tcc_id > 0) {
        tcc_at = tcc_value_offset(egress_buffer, size, self->tcc_id);
        if (tcc_at >= 0)
            tcc_stamp(&self->tcc, egress_buffer, tcc_at, self->probe_cluster);
    }
    srtp_fn protect = NULL;
    if (self->srtp != NULL)
        protect = rtcp ? self->srtp->protect_rtcp : self->srtp->protect_rtp;
    if (protect == NULL || protect(self->srtp->ctx, egress_buffer, &length) != 0) {
        self->send_errors++;
        Py_RETURN_NONE;
    }
    if (tcc_at >= 0)
        tcc_record_size(&self->tcc, length);
    if (self->fd >= 0 && self->batch != NULL && self->batch->collecting) {
        BatchOwner owner = {(PyObject *)self, &self->packets_sent, &self->bytes_sent,
                            &self->send_errors};
        if (batch_add(self->batch, self->fd, self->socket_inode, &self->addr, self->addr_length,
                      egress_buffer, length, &owner) < 0)
            return NULL;
        Py_RETURN_NONE; /* counted as sent; a refusal at the flush takes it back */
    } else if (self->fd >= 0) {
        if (sendto(self->fd, egress_buffer, (size_t)length, 0, (struct sockaddr *)&self->addr,
                   self->addr_length) < 0) {
            self->send_errors++;
            Py_RETURN_NONE;
        }
    } else if (self->relay != NULL && self->relay != Py_None) {
        PyObject *copy = PyBytes_FromStringAndSize((const char *)egress_buffer, length);
        if (copy == NULL)
            return NULL;
        PyObject *result = PyObject_CallOneArg(self->relay, copy);
        Py_DECREF(copy);
        if (result == NULL)
            return NULL;
        Py_DECREF(result);
    } else {
        Py_RETURN_NONE; /* closed */
    }
    self->packets_sent++;
    self->bytes_sent += (unsigned long long)length;
    Py_RETURN_NONE;
}

/* An RTP packet at egress_buffer: now, or into the pacer's queue (bypass: probes go at their
 * own rate). The first packet queued calls on_paced, whose timer then drains the queue. */
static PyObject *
send_paced(Egress *self, int size, int bypass)
{
    int was_empty = self->pacer.count == 0;
    switch (pacer_admit(&self->pacer, egress_buffer, size, bypass)) {
    case PACE_SEND:
        return send_now(self, size, 0);
    case PACE_QUEUED:
        if (was_empty && self->on_paced != NULL && self->on_paced != Py_None) {
            PyObject *result = PyObject_CallNoArgs(self->on_paced);
            if (result == NULL)
                return NULL;
            Py_DECREF(result);
        }
        Py_RETURN_NONE;
    case PACE_DROPPED:
        self->send_errors++;
        Py_RETURN_NONE;
    default:
        return NULL;
    }
}

static int
as_int(PyObject *value, long min, long max, const char *name, long *out)
{
    long v = PyLong_AsLong(value);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < min || v > max) {
        PyErr_Format(PyExc_ValueError, "%s out of range: %ld", name, v);
        return -1;
    }
    *out = v;
    return 0;
}

/* send_rewritten's first nine arguments: the rewritten packet written to egress_buffer. Its
 * size, with *payload_at where its payload starts; 0 when it cannot be sent (counted), -1 with
 * an exception set. */
static int
write_rewritten(Egress *self, PyObject *const *args, Py_ssize_t *payload_at)
{
    PyObject *data = args[0], *extensions = args[6], *value = args[8];
    if (!PyBytes_CheckExact(data) || !PyBytes_CheckExact(extensions) ||
        !PyBytes_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "data, extensions and value must be bytes");
        return -1;
    }
    long payload_start, payload_type, seq, value_at;
    unsigned long timestamp, ssrc;
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (as_int(args[1], 12, (long)size, "payload_start", &payload_start) < 0 ||
        as_int(args[2], 0, 127, "payload_type", &payload_type) < 0 ||
        as_int(args[3], 0, 0xFFFF, "seq", &seq) < 0 ||
        as_int(args[7], -1, 0xFFFF, "value_at", &value_at) < 0)
        return -1;
    timestamp = PyLong_AsUnsignedLongMask(args[4]);
    ssrc = PyLong_AsUnsignedLongMask(args[5]);
    if (PyErr_Occurred())
        return -1;
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t ext_size = PyBytes_GET_SIZE(extensions);
    Py_ssize_t value_size = PyBytes_GET_SIZE(value);
    Py_ssize_t payload_size = size - payload_start;
    Py_ssize_t total = 12 + ext_size + payload_size;
    if (total > MAX_PACKET || ext_size % 4 != 0 ||
        (value_at >= 0 && value_at + value_size > ext_size)) {
        self->send_errors++;
        return 0;
    }
    unsigned char *out = egress_buffer;
    /* V=2, the packet's own padding bit, X when there are extensions, no CSRCs */
    out[0] = 0x80 | (in[0] & 0x20) | (ext_size ? 0x10 : 0);
    out[1] = (in[1] & 0x80) | (unsigned char)payload_type;
    out[2] = (unsigned char)(seq >> 8);
    out[3] = (unsigned char)seq;
    out[4] = (unsigned char)(timestamp >> 24);
    out[5] = (unsigned char)(timestamp >> 16);
    out[6] = (unsigned char)(timestamp >> 8);
    out[7] = (unsigned char)timestamp;
    out[8] = (unsigned char)(ssrc >> 24);
    out[9] = (unsigned char)(ssrc >> 16);
    out[10] = (unsigned char)(ssrc >> 8);
    out[11] = (unsigned char)ssrc;
    memcpy(out + 12, PyBytes_AS_STRING(extensions), (size_t)ext_size);
    if (value_at >= 0)
        memcpy(out + 12 + value_at, PyBytes_AS_STRING(value), (size_t)value_size);
    memcpy(out + 12 + ext_size, in + payload_start, (size_t)payload_size);
    *payload_at = 12 + ext_size;
    return (int)total;
}

static PyObject *
Egress_send_rewritten(Egress *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "send_rewritten(data, payload_start, payload_type, seq, "
                                         "timestamp, ssrc, extensions, value_at, value)");
        return NULL;
    }
    Py_ssize_t payload_at;
    int total = write_rewritten(self, args, &payload_at);
    if (total <= 0) {
        if (total < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    return send_paced(self, total, 0);
}

/* RFC 7741 §4.2: write picture id, TL0PICIDX and KEYIDX into the VP8 payload descriptor that
 * starts the size octets at p (padding excluded); -1 leaves a field, and so does a packet
 * without it. Each field keeps its width (the M bit stays); a descriptor cut short is left
 * whole. The reference is sfu.rtp.vp8.patch_descriptor. */
static void
patch_vp8(unsigned char *p, Py_ssize_t size, long picture_id, long tl0picidx, long keyidx)
{
    Py_ssize_t pos = 2, pid_at = -1, tl0_at = -1, key_at = -1;
    int long_pid = 0;
    if (size < 2 || !(p[0] & 0x80)) /* no X: no field to write */
        return;
    unsigned char x = p[1];
    if (x & 0x80) { /* I */
        if (pos >= size)
            return;
        pid_at = pos;
        long_pid = p[pos] & 0x80;
        pos += long_pid ? 2 : 1;
        if (pos > size)
            return;
    }
    if (x & 0x40) { /* L */
        if (pos >= size)
            return;
        tl0_at = pos++;
    }
    if (x & 0x30) { /* T or K: one octet; its KEYIDX bits only count with K */
        if (pos >= size)
            return;
        if (x & 0x10)
            key_at = pos;
    }
    if (picture_id >= 0 && pid_at >= 0) {
        if (long_pid) {
            p[pid_at] = (unsigned char)(0x80 | ((picture_id >> 8) & 0x7F));
            p[pid_at + 1] = (unsigned char)picture_id;
        } else {
            p[pid_at] = (unsigned char)(picture_id & 0x7F);
        }
    }
    if (tl0picidx >= 0 && tl0_at >= 0)
        p[tl0_at] = (unsigned char)tl0picidx;
    if (keyidx >= 0 && key_at >= 0)
        p[key_at] = (unsigned char)((p[key_at] & 0xE0) | (keyidx & 0x1F));
}

static PyObject *
Egress_send_vp8(Egress *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError,
                        "send_vp8(data, payload_start, payload_type, seq, timestamp, ssrc, "
                        "extensions, value_at, value, picture_id, tl0picidx, keyidx)");
        return NULL;
    }
    long picture_id, tl0picidx, keyidx;
    if (as_int(args[9], -1, 0x7FFF, "picture_id", &picture_id) < 0 ||
        as_int(args[10], -1, 0xFF, "tl0picidx", &tl0picidx) < 0 ||
        as_int(args[11], -1, 0x1F, "keyidx", &keyidx) < 0)
        return NULL;
    Py_ssize_t payload_at;
    int total = write_rewritten(self, args, &payload_at);
    if (total <= 0) {
        if (total < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_ssize_t size = total - payload_at;
    if (size > 0 && egress_buffer[0] & 0x20) { /* RTP padding (RFC 3550 §5.1) */
        unsigned char padding = egress_buffer[total - 1];
        size = padding == 0 || padding > size ? 0 : size - padding;
    }
    patch_vp8(egress_buffer + payload_at, size, picture_id, tl0picidx, keyidx);
    return send_paced(self, total, 0);
}

static PyObject *
send_whole(Egress *self, PyObject *packet, int rtcp)
{
    if (!PyBytes_CheckExact(packet)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(packet);
    if (size > MAX_PACKET || self->srtp == NULL) {
        self->send_errors++;
        Py_RETURN_NONE;
    }
    memcpy(egress_buffer, PyBytes_AS_STRING(packet), (size_t)size);
    if (rtcp)
        return send_now(self, (int)size, 1);
    return send_paced(self, (int)size, self->probe_cluster >= 0);
}

static PyObject *
Egress_send_rtp(Egress *self, PyObject *packet)
{
    return send_whole(self, packet, 0);
}

static PyObject *
Egress_send_rtcp(Egress *self, PyObject *packet)
{
    return send_whole(self, packet, 1);
}

static PyObject *
Egress_transport_feedback(Egress *self, PyObject *fci)
{
    if (!PyBytes_CheckExact(fci)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes");
        return NULL;
    }
    return tcc_feedback(&self->tcc, (const unsigned char *)PyBytes_AS_STRING(fci),
                        PyBytes_GET_SIZE(fci));
}

/* A decrypted RTCP datagram that is one transport-cc feedback message and nothing else (what
 * browsers send with rtcp-rsize, RFC 5506, twenty times a second): matched here, with no Python
 * parse of it. False for any other datagram, which the caller parses as a compound. */
static PyObject *
Egress_lone_transport_feedback(Egress *self, PyObject *packet)
{
    if (!PyBytes_CheckExact(packet)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    Py_ssize_t size = PyBytes_GET_SIZE(packet);
    /* RFC 3550 §6.4.1 header; RTPFB (205) FMT 15: draft-holmer-rmcat-transport-wide-cc-
     * extensions-01 §3.1; sender and media SSRC, then the FCI */
    if (size < 12 || p[0] >> 6 != 2 || (p[0] & 0x1F) != 15 || p[1] != 205 ||
        4 + 4 * (((Py_ssize_t)p[2] << 8) | p[3]) != size)
        Py_RETURN_FALSE;
    Py_ssize_t end = size;
    if (p[0] & 0x20) { /* padding: the last octet counts it, itself included */
        Py_ssize_t padding = p[size - 1];
        if (padding == 0 || padding > size - 12)
            Py_RETURN_FALSE; /* the compound parser says what is wrong with it */
        end -= padding;
    }
    return tcc_feedback(&self->tcc, p + 12, end - 12);
}

static PyObject *
Egress_drain(Egress *self, PyObject *Py_UNUSED(ignored))
{
    int size;
    while ((size = pacer_next(&self->pacer, egress_buffer)) > 0) {
        PyObject *result = send_now(self, size, 0);
        if (result == NULL)
            return NULL;
        Py_DECREF(result);
    }
    return PyLong_FromLong(self->pacer.count);
}

static PyObject *
Egress_unpace(Egress *self, PyObject *value)
{
    long pt;
    if (as_int(value, 0, 127, "payload_type", &pt) < 0)
        return NULL;
    self->pacer.unpaced[pt >> 6] |= 1ULL << (pt & 63);
    Py_RETURN_NONE;
}

static PyObject *
Egress_get_pacing_rate(Egress *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->pacer.rate * 8);
}

static int
Egress_set_pacing_rate(Egress *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete pacing_rate");
        return -1;
    }
    long long bits = PyLong_AsLongLong(value);
    if (bits == -1 && PyErr_Occurred())
        return -1;
    if (bits < 0) {
        PyErr_SetString(PyExc_ValueError, "pacing_rate out of range");
        return -1;
    }
    self->pacer.rate = bits / 8;
    return 0;
}

static PyObject *
Egress_get_transport_cc_id(Egress *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->tcc_id);
}

static int
Egress_set_transport_cc_id(Egress *self, PyObject *value, void *Py_UNUSED(closure))
{
    long id;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete transport_cc_id");
        return -1;
    }
    if (as_int(value, 0, 255, "transport_cc_id", &id) < 0)
        return -1;
    if (id > 0 && tcc_enable(&self->tcc) < 0)
        return -1;
    self->tcc_id = (int)id;
    return 0;
}

static PyObject *
Egress_close(Egress *self, PyObject *Py_UNUSED(ignored))
{
    Egress_close_fd(self);
    Py_CLEAR(self->batch);
    pacer_free(&self->pacer);
    /* the send records too (192 KiB): a closed connection's egress may wait for the cycle
     * collector, and nothing is numbered after close */
    self->tcc_id = 0;
    tcc_free(&self->tcc);
    Py_CLEAR(self->relay);
    Py_RETURN_NONE;
}

static PyMethodDef Egress_methods[] = {
    {"send_rewritten", (PyCFunction)(void (*)(void))Egress_send_rewritten, METH_FASTCALL,
     "send_rewritten(data, payload_start, payload_type, seq, timestamp, ssrc, extensions, "
     "value_at, value)\n\n"
     "Send data's payload (and padding) under a new fixed header and extension block, SRTP-"
     "protected. The marker and padding bits are the packet's own; value, when value_at >= 0, "
     "is written over the extension block at that offset."},
    {"send_vp8", (PyCFunction)(void (*)(void))Egress_send_vp8, METH_FASTCALL,
     "send_vp8(data, payload_start, payload_type, seq, timestamp, ssrc, extensions, value_at, "
     "value, picture_id, tl0picidx, keyidx)\n\n"
     "send_rewritten, with the VP8 payload descriptor's picture id, TL0PICIDX and KEYIDX set "
     "(-1: left as they are) as sfu.rtp.vp8.patch_descriptor sets them."},
    {"send_rtp", (PyCFunction)Egress_send_rtp, METH_O, "Protect and send one RTP packet."},
    {"send_rtcp", (PyCFunction)Egress_send_rtcp, METH_O,
     "Protect and send one RTCP compound packet."},
    {"transport_feedback", (PyCFunction)Egress_transport_feedback, METH_O,
     "transport_feedback(fci)\n\n"
     "Match one transport-cc feedback message's FCI against the send records: (groups, "
     "received, lost, received_bytes, first_arrival, last_arrival, probes, min_delay, first_size) as "
     "sfu.bwe.feedback.FeedbackSummary.from_egress takes it, or None if it is malformed."},
    {"lone_transport_feedback", (PyCFunction)Egress_lone_transport_feedback, METH_O,
     "lone_transport_feedback(packet)\n\n"
     "transport_feedback of a decrypted RTCP packet that is one transport-cc feedback message "
     "and nothing else; False for any other packet (parse it as a compound)."},
    {"drain", (PyCFunction)Egress_drain, METH_NOARGS,
     "drain()\n\nSend what the pacing rate allows of the queued packets now; returns how many "
     "are left (call again in a few ms while it is not 0)."},
    {"unpace", (PyCFunction)Egress_unpace, METH_O,
     "unpace(payload_type)\n\nSend packets of this payload type (audio) at once, never paced."},
    {"close", (PyCFunction)Egress_close, METH_NOARGS,
     "Close the socket descriptor and drop the relay; later sends are no-ops."},
    {NULL},
};

static PyMemberDef Egress_members[] = {
    {"packets_sent", T_ULONGLONG, offsetof(Egress, packets_sent), READONLY, NULL},
    {"bytes_sent", T_ULONGLONG, offsetof(Egress, bytes_sent), READONLY, NULL},
    {"send_errors", T_ULONGLONG, offsetof(Egress, send_errors), READONLY, NULL},
    {"probe_cluster", T_INT, offsetof(Egress, probe_cluster), 0,
     "RTP packets sent while this is >= 0 are recorded as that probe cluster's"},
    {"transport_cc_sent", T_ULONGLONG, offsetof(Egress, tcc.next_seq), READONLY,
     "packets numbered with a transport-wide sequence number"},
    {"feedback_received", T_ULONGLONG, offsetof(Egress, tcc.feedback_received), READONLY, NULL},
    {"paced", T_ULONGLONG, offsetof(Egress, pacer.paced), READONLY,
     "RTP packets that waited in the pacer's queue"},
    {"pace_drops", T_ULONGLONG, offsetof(Egress, pacer.dropped), READONLY,
     "RTP packets dropped: the pacer's queue was full"},
    {"queued", T_INT, offsetof(Egress, pacer.count), READONLY, "RTP packets in the queue now"},
    {"on_paced", T_OBJECT, offsetof(Egress, on_paced), 0,
     "called (no arguments) when a packet is queued into an empty pacer"},
    {"feedback_malformed", T_ULONGLONG, offsetof(Egress, tcc.feedback_malformed), READONLY,
     NULL},
    {NULL},
};

static PyGetSetDef Egress_getset[] = {
    {"transport_cc_id", (getter)Egress_get_transport_cc_id, (setter)Egress_set_transport_cc_id,
     "the header extension id of the transport-wide sequence number (0: not negotiated)", NULL},
    {"pacing_rate", (getter)Egress_get_pacing_rate, (setter)Egress_set_pacing_rate,
     "bit/s RTP may leave at (bursts of 5 ms); 0: not paced", NULL},
    {NULL},
};

static PyTypeObject EgressType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu.media._packetio.Egress",
    .tp_doc = "Protects packets with one SRTP session and sends them to one address.",
    .tp_basicsize = sizeof(Egress),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Egress_new,
    .tp_init = (initproc)Egress_init,
    .tp_dealloc = (destructor)Egress_dealloc,
    .tp_methods = Egress_methods,
    .tp_members = Egress_members,
    .tp_getset = Egress_getset,
};

static struct PyModuleDef packetio_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sfu.media._packetio",
    .m_doc = "SRTP packet I/O for the forward path (see sfu/media/srtp.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__packetio(void)
{
    if (PyType_Ready(&SrtpSessionType) < 0 || PyType_Ready(&EgressType) < 0 ||
        PyType_Ready(&SendBatchType) < 0 || udpread_ready() < 0)
        return NULL;
    PyObject *module = PyModule_Create(&packetio_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "MAX_PACKET", MAX_PACKET) < 0 ||
        PyModule_AddObjectRef(module, "SrtpSession", (PyObject *)&SrtpSessionType) < 0 ||
        PyModule_AddObjectRef(module, "Egress", (PyObject *)&EgressType) < 0 ||
        PyModule_AddObjectRef(module, "SendBatch", (PyObject *)&SendBatchType) < 0 ||
        PyModule_AddObjectRef(module, "UdpReader", (PyObject *)&UdpReaderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
