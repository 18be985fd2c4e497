/*
 * The copies of one received packet leave in one system call (issue 13, scale-out plan §2.5).
 *
 * On the shared UDP port every subscriber's egress sends through the same socket, so the K
 * copies a forwarded packet makes can go in one sendmmsg(2) instead of K sendto(2). The port
 * calls begin() before it hands a received datagram to its connection and flush() after: every
 * copy protected in between is queued here. A send outside that window (the pacer's timer,
 * RTCP reports, probes) is not batched and leaves at once, so nothing waits for a flush that
 * no one arms.
 *
 * A queued slot keeps its own copy of the protected packet and a reference to its egress; the
 * egress flushes the batch before it closes or moves its descriptor (Egress.close, re-init),
 * so a slot never names a descriptor that was closed.
 */
#include "_sendbatch.h"

#include <errno.h>
#include <string.h>
#include <structmember.h>

int
batch_add(SendBatch *self, int fd, unsigned long socket, const struct sockaddr_storage *addr,
          socklen_t addr_length, const unsigned char *p, int length, const BatchOwner *owner)
{
    if (self->buffers == NULL) {
        self->buffers = PyMem_Malloc((size_t)BATCH_SLOTS * BATCH_SLOT_SIZE);
        if (self->buffers == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (self->count == BATCH_SLOTS) {
        int collecting = self->collecting;
        batch_flush(self);
        self->collecting = collecting;
    }
    int i = self->count++;
    unsigned char *slot = self->buffers + (size_t)i * BATCH_SLOT_SIZE;
    memcpy(slot, p, (size_t)length);
    memcpy(&self->addresses[i], addr, (size_t)addr_length);
    self->iovecs[i].iov_base = slot;
    self->iovecs[i].iov_len = (size_t)length;
    struct msghdr *header = &self->messages[i].msg_hdr;
    memset(header, 0, sizeof(*header));
    header->msg_name = &self->addresses[i];
    header->msg_namelen = addr_length;
    header->msg_iov = &self->iovecs[i];
    header->msg_iovlen = 1;
    self->fds[i] = fd;
    self->sockets[i] = socket;
    self->owners[i] = *owner;
    Py_INCREF(owner->owner);
    *owner->packets_sent += 1;
    *owner->bytes_sent += (unsigned long long)length;
    return 0;
}

static void
refused(SendBatch *self, int i)
{
    BatchOwner *owner = &self->owners[i];
    *owner->packets_sent -= 1;
    *owner->bytes_sent -= (unsigned long long)self->iovecs[i].iov_len;
    *owner->send_errors += 1;
}

void
batch_flush(SendBatch *self)
{
    int start = 0;
    while (start < self->count) {
        int end = start + 1;
        while (end < self->count && self->sockets[end] == self->sockets[start])
            end++;
        int sent = sendmmsg(self->fds[start], &self->messages[start], (unsigned)(end - start), 0);
        self->flushes++;
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            refused(self, start); /* a full buffer (EAGAIN) or an unreachable peer */
            sent = 1;
        } else {
            self->batched += (unsigned long long)sent;
        }
        start += sent;
    }
    /* reset before the references go: releasing the last one may close an egress, whose
     * close flushes this batch again */
    BatchOwner owners[BATCH_SLOTS];
    int count = self->count;
    memcpy(owners, self->owners, sizeof(BatchOwner) * (size_t)count);
    self->count = 0;
    self->collecting = 0;
    for (int i = 0; i < count; i++)
        Py_DECREF(owners[i].owner);
}

static PyObject *
SendBatch_begin(SendBatch *self, PyObject *Py_UNUSED(ignored))
{
    self->collecting = 1;
    Py_RETURN_NONE;
}

static PyObject *
SendBatch_flush(SendBatch *self, PyObject *Py_UNUSED(ignored))
{
    batch_flush(self);
    Py_RETURN_NONE;
}

static int
SendBatch_traverse(SendBatch *self, visitproc visit, void *arg)
{
    for (int i = 0; i < self->count; i++)
        Py_VISIT(self->owners[i].owner);
    return 0;
}

static int
SendBatch_clear(SendBatch *self)
{
    int count = self->count;
    self->count = 0;
    for (int i = 0; i < count; i++)
        Py_CLEAR(self->owners[i].owner);
    return 0;
}

static void
SendBatch_dealloc(SendBatch *self)
{
    PyObject_GC_UnTrack(self);
    batch_flush(self); /* what was queued still leaves */
    PyMem_Free(self->buffers);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef SendBatch_methods[] = {
    {"begin", (PyCFunction)SendBatch_begin, METH_NOARGS,
     "begin()\n\nQueue the sends of egresses on this batch until flush()."},
    {"flush", (PyCFunction)SendBatch_flush, METH_NOARGS,
     "flush()\n\nSend what is queued (one sendmmsg per run of one socket) and stop queueing."},
    {NULL},
};

static PyMemberDef SendBatch_members[] = {
    {"pending", T_INT, offsetof(SendBatch, count), READONLY, "datagrams queued now"},
    {"flushes", T_ULONGLONG, offsetof(SendBatch, flushes), READONLY, "sendmmsg calls made"},
    {"batched", T_ULONGLONG, offsetof(SendBatch, batched), READONLY,
     "datagrams those calls sent"},
    {NULL},
};

PyTypeObject SendBatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu.media._packetio.SendBatch",
    .tp_doc = "Datagrams that egresses queue between begin() and flush(), sent by sendmmsg.",
    .tp_basicsize = sizeof(SendBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)SendBatch_dealloc,
    .tp_traverse = (traverseproc)SendBatch_traverse,
    .tp_clear = (inquiry)SendBatch_clear,
    .tp_methods = SendBatch_methods,
    .tp_members = SendBatch_members,
};
