/*
 * Transport-wide congestion control, the sender's side (draft-holmer-rmcat-transport-wide-cc-
 * extensions-01): number every packet sent on a connection, remember when it left and how big
 * it was, and match the receiver's feedback against that.
 *
 * Feedback reports every packet, so matching it in Python would cost about what forwarding the
 * packet did. Here it costs a table lookup, and Python sees only what the estimator needs
 * (sfu/bwe/feedback.py): packet groups (draft-ietf-rmcat-gcc §5.2), counts and probe packets.
 */
#include "_transport_cc.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MASK (TCC_HISTORY - 1)
#define BURST_US 5000       /* draft-ietf-rmcat-gcc §5.2 burst_time */
#define BURST_SPAN_US 100000 /* a burst never groups more than this much arrival time */
#define DELTA_US 250        /* receive deltas are in 250 µs units */
#define REFERENCE_US 64000  /* the reference time is in 64 ms units */
#define REFERENCE_LIMIT (INT64_C(1) << 31) /* of those units */

static int64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.monotonic's clock */
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

Py_ssize_t
tcc_value_offset(const unsigned char *p, Py_ssize_t size, int id)
{
    if (size < 12 || !(p[0] & 0x10))
        return -1;
    Py_ssize_t at = 12 + 4 * (Py_ssize_t)(p[0] & 0x0F);
    if (at + 4 > size)
        return -1;
    unsigned profile = ((unsigned)p[at] << 8) | p[at + 1];
    Py_ssize_t end = at + 4 + 4 * (Py_ssize_t)(((unsigned)p[at + 2] << 8) | p[at + 3]);
    if (end > size)
        return -1;
    at += 4;
    if (profile == 0xBEDE) { /* one-byte elements: ID (4 bits), length - 1 (4 bits) */
        while (at < end) {
            int element = p[at] >> 4, length = (p[at] & 0x0F) + 1;
            if (p[at] == 0) { /* padding */
                at++;
                continue;
            }
            if (element == 15) /* reserved: stop (RFC 8285 §4.2) */
                return -1;
            if (element == id)
                return length == 2 && at + 3 <= end ? at + 1 : -1;
            at += 1 + length;
        }
    } else if ((profile & 0xFFF0) == 0x1000) { /* two-byte elements: ID, length */
        while (at < end) {
            if (p[at] == 0) {
                at++;
                continue;
            }
            if (at + 2 > end)
                return -1;
            int element = p[at], length = p[at + 1];
            if (element == id)
                return length == 2 && at + 4 <= end ? at + 2 : -1;
            at += 2 + length;
        }
    }
    return -1;
}

int
tcc_enable(TccState *state)
{
    if (state->records != NULL)
        return 0;
    state->records = calloc(TCC_HISTORY, sizeof(TccRecord));
    if (state->records == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void
tcc_free(TccState *state)
{
    free(state->records);
    state->records = NULL;
}

void
tcc_stamp(TccState *state, unsigned char *p, Py_ssize_t value_at, int cluster)
{
    uint64_t seq = state->next_seq++;
    p[value_at] = (unsigned char)(seq >> 8);
    p[value_at + 1] = (unsigned char)seq;
    TccRecord *record = &state->records[seq & MASK];
    record->tag = seq + 1;
    record->send_us = now_us();
    record->size = 0;
    record->cluster = (int16_t)cluster;
}

void
tcc_record_size(TccState *state, int length)
{
    if (state->next_seq > 0) {
        TccRecord *record = &state->records[(state->next_seq - 1) & MASK];
        record->size = (uint16_t)(length > 0xFFFF ? 0xFFFF : length);
    }
}

/* The record of the packet numbered seq16 (the low 16 bits), if it is still kept. */
static const TccRecord *
lookup(const TccState *state, unsigned seq16)
{
    if (state->next_seq == 0 || state->records == NULL)
        return NULL;
    uint64_t last = state->next_seq - 1;
    uint64_t back = ((unsigned)(last & 0xFFFF) - seq16) & 0xFFFF;
    if (back > last || back >= TCC_HISTORY)
        return NULL;
    const TccRecord *record = &state->records[(last - back) & MASK];
    return record->tag == last - back + 1 ? record : NULL;
}

static PyObject *
group_tuple(const TccGroup *group)
{
    return Py_BuildValue("(ddL)", (double)group->last_send_us / 1e6,
                         (double)group->last_arrival_us / 1e6, group->size);
}

/* libwebrtc's and the draft's burst rule: a packet that arrives within the burst time of the
 * group's last one, and earlier than its send spacing says it should, was queued behind it. */
static int
in_burst(const TccGroup *group, int64_t send_us, int64_t arrival_us)
{
    int64_t arrival_delta = arrival_us - group->last_arrival_us;
    int64_t send_delta = send_us - group->last_send_us;
    if (send_delta == 0)
        return 1;
    return arrival_delta - send_delta < 0 && arrival_delta <= BURST_US &&
           arrival_us - group->first_arrival_us < BURST_SPAN_US;
}

/* Add one received packet to the open group; a packet past it closes it (appended to groups). */
static int
group_packet(TccGroup *group, int64_t send_us, int64_t arrival_us, int size, PyObject *groups)
{
    if (group->open) {
        if (send_us < group->first_send_us)
            return 0; /* sent before the group: reordered, left out of the delay signal */
        if (send_us - group->first_send_us > BURST_US && !in_burst(group, send_us, arrival_us)) {
            PyObject *done = group_tuple(group);
            if (done == NULL || PyList_Append(groups, done) < 0) {
                Py_XDECREF(done);
                return -1;
            }
            Py_DECREF(done);
            group->open = 0;
        }
    }
    if (!group->open) {
        group->open = 1;
        group->first_send_us = group->last_send_us = send_us;
        group->first_arrival_us = group->last_arrival_us = arrival_us;
        group->size = 0;
    }
    if (send_us > group->last_send_us)
        group->last_send_us = send_us;
    if (arrival_us > group->last_arrival_us)
        group->last_arrival_us = arrival_us;
    group->size += size;
    return 0;
}

static unsigned
be16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

/* The statuses of count packets from the chunks at fci[*at...]: 0 not received, 1 small delta,
 * 2 large or negative delta. -1 when the chunks are cut short or use the reserved symbol. */
static int
read_statuses(const unsigned char *fci, Py_ssize_t size, Py_ssize_t *at, unsigned count,
              unsigned char *status)
{
    unsigned i = 0;
    while (i < count) {
        if (*at + 2 > size)
            return -1;
        unsigned chunk = be16(fci + *at);
        *at += 2;
        if (!(chunk & 0x8000)) { /* run length: symbol (2 bits), run (13 bits) */
            unsigned symbol = (chunk >> 13) & 3, run = chunk & 0x1FFF;
            if (symbol == 3 || run == 0)
                return -1;
            for (unsigned j = 0; j < run && i < count; j++)
                status[i++] = (unsigned char)symbol;
        } else if (!(chunk & 0x4000)) { /* status vector of 14 one-bit symbols */
            for (int bit = 13; bit >= 0 && i < count; bit--)
                status[i++] = (unsigned char)((chunk >> bit) & 1);
        } else { /* status vector of 7 two-bit symbols */
            for (int shift = 12; shift >= 0 && i < count; shift -= 2) {
                unsigned symbol = (chunk >> shift) & 3;
                if (symbol == 3)
                    return -1;
                status[i++] = (unsigned char)symbol;
            }
        }
    }
    return 0;
}

static unsigned char statuses[0x10000]; /* single-threaded, as egress_buffer */

PyObject *
tcc_feedback(TccState *state, const unsigned char *fci, Py_ssize_t size)
{
    state->feedback_received++;
    if (size < 8)
        goto malformed;
    unsigned base = be16(fci), count = be16(fci + 2);
    int32_t reference = (int32_t)(((uint32_t)fci[4] << 16) | ((uint32_t)fci[5] << 8) | fci[6]);
    Py_ssize_t at = 8;
    if (read_statuses(fci, size, &at, count, statuses) < 0)
        goto malformed;
    /* the receive deltas must all be there before anything is taken from them */
    Py_ssize_t deltas_at = at;
    for (unsigned i = 0; i < count; i++)
        at += statuses[i];
    if (at > size)
        goto malformed;
    if (!state->have_reference) {
        state->have_reference = 1;
        state->reference_base = reference;
    } else { /* 24-bit wrap: the nearest value */
        int32_t delta = (reference - state->last_reference) & 0xFFFFFF;
        if (delta >= 0x800000)
            delta -= 0x1000000;
        state->reference_base += delta;
        /* Four years of a real clock; only a peer stepping its reference time half the range
         * each message gets here (its arrivals mean nothing anyway): start again from this one,
         * which the estimator takes as a new clock, before base * REFERENCE_US overflows. */
        if (state->reference_base > REFERENCE_LIMIT || state->reference_base < -REFERENCE_LIMIT)
            state->reference_base = reference;
    }
    state->last_reference = reference;

    PyObject *groups = PyList_New(0), *probes = PyList_New(0);
    if (groups == NULL || probes == NULL)
        goto fail;
    long long received = 0, lost = 0, received_bytes = 0;
    int64_t arrival_us = state->reference_base * REFERENCE_US;
    int64_t first_arrival = 0, last_arrival = 0, min_delay = 0;
    long long first_size = 0; /* the first arrival's: the arrival span carries the others' bytes */
    at = deltas_at;
    for (unsigned i = 0; i < count; i++) {
        const TccRecord *record = lookup(state, (base + i) & 0xFFFF);
        unsigned char status = statuses[i];
        if (status == 1) {
            arrival_us += (int64_t)fci[at] * DELTA_US;
            at += 1;
        } else if (status == 2) {
            arrival_us += (int64_t)(int16_t)be16(fci + at) * DELTA_US;
            at += 2;
        }
        if (record == NULL)
            continue;
        if (status == 0) {
            lost++;
            continue;
        }
        if (received == 0 || arrival_us < first_arrival) {
            first_arrival = arrival_us;
            first_size = record->size;
        }
        if (received == 0 || arrival_us > last_arrival)
            last_arrival = arrival_us;
        /* one-way delay, offset by the clocks' difference: only its changes mean anything */
        if (received == 0 || arrival_us - record->send_us < min_delay)
            min_delay = arrival_us - record->send_us;
        received++;
        received_bytes += record->size;
        if (group_packet(&state->group, record->send_us, arrival_us, record->size, groups) < 0)
            goto fail;
        if (record->cluster >= 0) {
            PyObject *probe = Py_BuildValue("(iddi)", (int)record->cluster,
                                            (double)record->send_us / 1e6,
                                            (double)arrival_us / 1e6, (int)record->size);
            if (probe == NULL || PyList_Append(probes, probe) < 0) {
                Py_XDECREF(probe);
                goto fail;
            }
            Py_DECREF(probe);
        }
    }
    PyObject *first = Py_None, *last = Py_None, *delay = Py_None;
    if (received > 0) {
        first = PyFloat_FromDouble((double)first_arrival / 1e6);
        last = PyFloat_FromDouble((double)last_arrival / 1e6);
        delay = PyFloat_FromDouble((double)min_delay / 1e6);
        if (first == NULL || last == NULL || delay == NULL) {
            Py_XDECREF(first);
            Py_XDECREF(last);
            Py_XDECREF(delay);
            goto fail;
        }
    } else {
        Py_INCREF(first);
        Py_INCREF(last);
        Py_INCREF(delay);
    }
    return Py_BuildValue("(NLLLNNNNL)", groups, received, lost, received_bytes, first, last, probes,
                         delay, first_size);
fail:
    Py_XDECREF(groups);
    Py_XDECREF(probes);
    return NULL;
malformed:
    state->feedback_malformed++;
    Py_RETURN_NONE;
}
