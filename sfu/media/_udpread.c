/*
 * The shared UDP port's read path in C (issue 13, scale-out plan §2.5).
 *
 * One recvmmsg(2) takes up to READ_SLOTS datagrams. A DTLS, RTP or RTCP datagram (RFC 7983
 * §7: first octet 20-63 or 128-191) whose source address a connection has authenticated is
 * handed straight to that connection's data_received(data, 1): no address tuple, no Python
 * routing frame. Everything else (STUN, which is routed by username or transaction, and what
 * comes from an address no check authenticated) goes to the Python on_datagram(data, (host,
 * port)), which routes or counts it.
 *
 * The routes are a dict the port keeps in step with its UdpRoutes: the source packed as its
 * address octets then its port (network order) -> the connection. aiortc's ICE has the one
 * component (RTP and RTCP multiplexed, RFC 5761), hence data_received(data, 1).
 *
 * With a SendBatch, every copy the handlers send leaves at the end of the read in one
 * sendmmsg per socket: the copies of one packet, and those of the packets read with it.
 */
#include "_sendbatch.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <structmember.h>

#define READ_SLOTS 32
/* larger than any packet the forward path accepts (MAX_PACKET): a longer one is cut, and dropped */
#define READ_SIZE 4096
/* recvmmsg rounds per readiness: the loop's other callbacks get a turn after as many datagrams */
#define READ_ROUNDS 4

typedef struct {
    PyObject_HEAD
    int fd; /* borrowed: the port's socket, removed from the loop before it closes */
    PyObject *routes;
    PyObject *on_datagram;
    SendBatch *batch;
    unsigned char *buffers;
    struct mmsghdr messages[READ_SLOTS];
    struct iovec iovecs[READ_SLOTS];
    struct sockaddr_storage sources[READ_SLOTS];
    unsigned long long datagrams, reads, routed, truncated, errors;
} UdpReader;

static PyObject *data_received_name, *one;

static int
UdpReader_init(UdpReader *self, PyObject *args, PyObject *kwds)
{
    static char *keywords[] = {"fd", "routes", "on_datagram", "batch", NULL};
    int fd;
    PyObject *routes, *on_datagram, *batch = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO!O|O", keywords, &fd, &PyDict_Type, &routes,
                                     &on_datagram, &batch))
        return -1;
    if (batch != Py_None && !PyObject_TypeCheck(batch, &SendBatchType)) {
        PyErr_SetString(PyExc_TypeError, "batch must be a SendBatch or None");
        return -1;
    }
    if (self->buffers == NULL) {
        self->buffers = PyMem_Malloc((size_t)READ_SLOTS * READ_SIZE);
        if (self->buffers == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (int i = 0; i < READ_SLOTS; i++) {
        self->iovecs[i].iov_base = self->buffers + (size_t)i * READ_SIZE;
        self->iovecs[i].iov_len = READ_SIZE;
        struct msghdr *header = &self->messages[i].msg_hdr;
        memset(header, 0, sizeof(*header));
        header->msg_name = &self->sources[i];
        header->msg_iov = &self->iovecs[i];
        header->msg_iovlen = 1;
    }
    self->fd = fd;
    Py_XSETREF(self->routes, Py_NewRef(routes));
    Py_XSETREF(self->on_datagram, Py_NewRef(on_datagram));
    Py_XSETREF(self->batch, batch == Py_None ? NULL : (SendBatch *)Py_NewRef(batch));
    return 0;
}

/* The source as the routes key it: address octets, then the port. NULL: not IP. */
static PyObject *
route_key(const struct sockaddr_storage *source)
{
    unsigned char key[18];
    if (source->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)source;
        memcpy(key, &in4->sin_addr, 4);
        memcpy(key + 4, &in4->sin_port, 2);
        return PyBytes_FromStringAndSize((const char *)key, 6);
    }
    if (source->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)source;
        memcpy(key, &in6->sin6_addr, 16);
        memcpy(key + 16, &in6->sin6_port, 2);
        return PyBytes_FromStringAndSize((const char *)key, 18);
    }
    Py_RETURN_NONE;
}

/* (host, port) as asyncio gives a datagram's source */
static PyObject *
source_tuple(const struct sockaddr_storage *source)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    if (source->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)source;
        inet_ntop(AF_INET, &in4->sin_addr, host, sizeof(host));
        port = ntohs(in4->sin_port);
    } else if (source->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)source;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    } else {
        return Py_BuildValue("(si)", "", 0);
    }
    return Py_BuildValue("(si)", host, port);
}

/* One datagram: to its connection, or to on_datagram. -1 only on a failure of our own (no
 * memory); a handler's exception is reported as unraisable and the read goes on. */
static int
deliver(UdpReader *self, int i)
{
    const unsigned char *p = self->iovecs[i].iov_base;
    unsigned int length = self->messages[i].msg_len;
    const struct sockaddr_storage *source = &self->sources[i];
    PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)length);
    if (data == NULL)
        return -1;
    PyObject *result = NULL, *handler = self->on_datagram;
    unsigned char first = length ? p[0] : 255;
    if ((first > 19 && first < 64) || (first > 127 && first < 192)) { /* DTLS; RTP/RTCP */
        PyObject *key = route_key(source);
        if (key == NULL) {
            Py_DECREF(data);
            return -1;
        }
        PyObject *connection = PyDict_GetItemWithError(self->routes, key); /* borrowed */
        Py_DECREF(key);
        if (connection != NULL) {
            Py_INCREF(connection);
            PyObject *call[] = {connection, data, one};
            result = PyObject_VectorcallMethod(data_received_name, call,
                                               3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            handler = connection;
            Py_DECREF(connection);
            self->routed++;
            goto done;
        }
        if (PyErr_Occurred()) {
            Py_DECREF(data);
            return -1;
        }
    }
    PyObject *address = source_tuple(source);
    if (address == NULL) {
        Py_DECREF(data);
        return -1;
    }
    result = PyObject_CallFunctionObjArgs(self->on_datagram, data, address, NULL);
    Py_DECREF(address);
done:
    Py_DECREF(data);
    if (result == NULL)
        PyErr_WriteUnraisable(handler);
    else
        Py_DECREF(result);
    return 0;
}

static PyObject *
UdpReader_read(UdpReader *self, PyObject *Py_UNUSED(ignored))
{
    if (self->buffers == NULL) {
        PyErr_SetString(PyExc_ValueError, "UdpReader not initialised");
        return NULL;
    }
    int failed = 0;
    if (self->batch != NULL)
        self->batch->collecting = 1;
    for (int round = 0; round < READ_ROUNDS && !failed; round++) {
        for (int i = 0; i < READ_SLOTS; i++) {
            self->messages[i].msg_hdr.msg_namelen = sizeof(self->sources[i]);
            self->messages[i].msg_hdr.msg_flags = 0;
        }
        int count = recvmmsg(self->fd, self->messages, READ_SLOTS, MSG_DONTWAIT, NULL);
        if (count < 0) {
            if (errno == EINTR) {
                round--;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                self->errors++; /* e.g. a closed descriptor: the port is going away */
            break;
        }
        self->reads++;
        for (int i = 0; i < count && !failed; i++) {
            self->datagrams++;
            if (self->messages[i].msg_hdr.msg_flags & MSG_TRUNC) {
                self->truncated++;
                continue;
            }
            failed = deliver(self, i) < 0;
        }
        if (count < READ_SLOTS)
            break;
    }
    if (self->batch != NULL)
        batch_flush(self->batch);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static int
UdpReader_traverse(UdpReader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->routes);
    Py_VISIT(self->on_datagram);
    Py_VISIT(self->batch);
    return 0;
}

static int
UdpReader_clear(UdpReader *self)
{
    Py_CLEAR(self->routes);
    Py_CLEAR(self->on_datagram);
    Py_CLEAR(self->batch);
    return 0;
}

static void
UdpReader_dealloc(UdpReader *self)
{
    PyObject_GC_UnTrack(self);
    UdpReader_clear(self);
    PyMem_Free(self->buffers);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef UdpReader_methods[] = {
    {"read", (PyCFunction)UdpReader_read, METH_NOARGS,
     "read()\n\nTake what the socket holds (up to 128 datagrams) and deliver each."},
    {NULL},
};

static PyMemberDef UdpReader_members[] = {
    {"datagrams", T_ULONGLONG, offsetof(UdpReader, datagrams), READONLY, "datagrams read"},
    {"reads", T_ULONGLONG, offsetof(UdpReader, reads), READONLY, "recvmmsg calls that returned"},
    {"routed", T_ULONGLONG, offsetof(UdpReader, routed), READONLY,
     "datagrams handed to a connection by their source"},
    {"truncated", T_ULONGLONG, offsetof(UdpReader, truncated), READONLY,
     "datagrams longer than 4096 octets, dropped"},
    {"errors", T_ULONGLONG, offsetof(UdpReader, errors), READONLY,
     "recvmmsg calls that failed (other than: nothing to read)"},
    {NULL},
};

PyTypeObject UdpReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu.media._packetio.UdpReader",
    .tp_doc = "UdpReader(fd, routes, on_datagram, batch=None): the shared port's read path.",
    .tp_basicsize = sizeof(UdpReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)UdpReader_init,
    .tp_dealloc = (destructor)UdpReader_dealloc,
    .tp_traverse = (traverseproc)UdpReader_traverse,
    .tp_clear = (inquiry)UdpReader_clear,
    .tp_methods = UdpReader_methods,
    .tp_members = UdpReader_members,
};

int
udpread_ready(void)
{
    data_received_name = PyUnicode_InternFromString("data_received");
    one = PyLong_FromLong(1);
    if (data_received_name == NULL || one == NULL)
        return -1;
    return PyType_Ready(&UdpReaderType);
}
