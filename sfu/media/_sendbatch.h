/*
 * A batch of protected datagrams that leave in one sendmmsg (issue 13, scale-out plan §2.5).
 * See _sendbatch.c.
 */
#ifndef SFU_SENDBATCH_H
#define SFU_SENDBATCH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/socket.h>

#define BATCH_SLOTS 64
/* MAX_PACKET + TRAILER of _packetio.c: a protected packet at its largest */
#define BATCH_SLOT_SIZE (2048 + 4 + 16 + 128)

/* What a slot reports back to the egress that queued it when its send fails. */
typedef struct {
    PyObject *owner; /* a strong reference: the egress outlives its queued slots */
    unsigned long long *packets_sent, *bytes_sent, *send_errors;
} BatchOwner;

typedef struct {
    PyObject_HEAD
    int collecting; /* between begin() and flush(): sends queue here */
    int count;
    unsigned long long flushes, batched; /* sendmmsg calls; datagrams they carried */
    unsigned char *buffers;              /* BATCH_SLOTS of BATCH_SLOT_SIZE, on first use */
    int fds[BATCH_SLOTS];                /* borrowed: each slot's egress keeps its own open */
    unsigned long sockets[BATCH_SLOTS];  /* the socket's inode: egresses hold duplicates */
    struct mmsghdr messages[BATCH_SLOTS];
    struct iovec iovecs[BATCH_SLOTS];
    struct sockaddr_storage addresses[BATCH_SLOTS];
    BatchOwner owners[BATCH_SLOTS];
} SendBatch;

extern PyTypeObject SendBatchType;

/* The shared port's reader (_udpread.c), and what makes it ready at module init. */
extern PyTypeObject UdpReaderType;
int udpread_ready(void);

/* Queue length protected octets at p for fd (whose socket is inode socket: egresses each hold
 * a duplicate descriptor of the one socket) and addr, counted as sent for owner (a full batch
 * is flushed first). -1 with MemoryError set, else 0. */
int batch_add(SendBatch *batch, int fd, unsigned long socket, const struct sockaddr_storage *addr,
              socklen_t addr_length, const unsigned char *p, int length, const BatchOwner *owner);

/* Send what is queued, in runs of one socket; a datagram the kernel refuses is counted
 * as its egress's send error, not retried. Ends collecting. */
void batch_flush(SendBatch *batch);

#endif
