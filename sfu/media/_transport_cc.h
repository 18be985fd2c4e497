/*
 * Transport-wide congestion control, the sender's side of it: what the egress does per packet
 * (draft-holmer-rmcat-transport-wide-cc-extensions-01) and the matching of the subscriber's
 * feedback against it. See _transport_cc.c.
 */
#ifndef SFU_TRANSPORT_CC_H
#define SFU_TRANSPORT_CC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* Send records kept per connection: at 4,000 packets/s, two seconds of feedback delay. */
#define TCC_HISTORY 8192

typedef struct {
    uint64_t tag; /* the packet's unwrapped transport-wide sequence number + 1; 0: empty */
    int64_t send_us;
    uint16_t size;
    int16_t cluster; /* probe cluster id, or -1 */
} TccRecord;

/* A group of packets sent within a burst (draft-ietf-rmcat-gcc §5.2), while it grows. */
typedef struct {
    int open;
    int64_t first_send_us, last_send_us, first_arrival_us, last_arrival_us;
    long long size;
} TccGroup;

typedef struct {
    TccRecord *records; /* TCC_HISTORY of them, allocated when the extension is negotiated */
    uint64_t next_seq;  /* unwrapped: the next packet's number */
    int have_reference;
    int32_t last_reference; /* the last feedback's 24-bit reference time, in 64 ms units */
    int64_t reference_base; /* the unwrapped reference time, in 64 ms units */
    TccGroup group;
    unsigned long long feedback_received;
    unsigned long long feedback_malformed;
} TccState;

/* The offset in the RTP packet p (size octets) of the 2-octet value of header extension
 * element id (RFC 8285, one- or two-byte form), or -1 when it has none of that length. */
Py_ssize_t tcc_value_offset(const unsigned char *p, Py_ssize_t size, int id);

/* Allocate the records (idempotent); -1 with MemoryError set. */
int tcc_enable(TccState *state);
void tcc_free(TccState *state);

/* Number the packet at p (its element at value_at) and record it as sent now. */
void tcc_stamp(TccState *state, unsigned char *p, Py_ssize_t value_at, int cluster);
/* The size on the wire of the packet stamped last (known once it is protected). */
void tcc_record_size(TccState *state, int length);

/* Egress.transport_feedback's result for one FCI; None when malformed (counted). */
PyObject *tcc_feedback(TccState *state, const unsigned char *fci, Py_ssize_t size);

#endif
