/*
 * Pacing: don't burst a keyframe's packets into a subscriber's link faster than its estimate.
 *
 * The egress sends at once while the bucket has tokens (the common case, a clock read and a
 * subtraction) and queues the rest; the connection's timer drains the queue every few ms
 * (Egress.drain), so nothing runs per packet in Python and no packet waits for a task. A queue
 * that would take longer than QUEUE_LIMIT_US to drain at the pacing rate drains faster instead
 * (libwebrtc does the same), and audio is never paced: it is small, and late audio is lost.
 */
#include "_pacer.h"

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BURST_US 5000         /* tokens saved up while idle: 5 ms at the pacing rate */
#define MIN_BURST 3000       /* ... but always two full-size packets */
#define QUEUE_LIMIT_US 500000 /* what the queue may hold, in time at the pacing rate */

static int64_t
now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
refill(Pacer *pacer)
{
    int64_t now = now_us();
    int64_t rate = pacer->rate;
    /* drain a long queue faster: its packets must not wait longer than QUEUE_LIMIT_US */
    int64_t drain = pacer->queued_bytes * 1000000 / QUEUE_LIMIT_US;
    if (drain > rate)
        rate = drain;
    double burst = (double)rate * BURST_US / 1e6;
    if (burst < MIN_BURST)
        burst = MIN_BURST;
    pacer->tokens += (double)(now - pacer->refill_us) * (double)rate / 1e6;
    /* idle time saves up a burst at most; a queue that waited (a late timer) gets all it is
     * owed, or it would fall behind the rate for good */
    if (pacer->count == 0 && pacer->tokens > burst)
        pacer->tokens = burst;
    pacer->refill_us = now;
}

int
pacer_admit(Pacer *pacer, const unsigned char *p, int size, int bypass)
{
    unsigned pt = p[1] & 0x7F;
    if (pacer->rate <= 0 || bypass || (pacer->unpaced[pt >> 6] >> (pt & 63)) & 1)
        return PACE_SEND;
    refill(pacer);
    if (pacer->count == 0 && pacer->tokens > 0) {
        pacer->tokens -= size;
        return PACE_SEND;
    }
    if (pacer->count == PACER_SLOTS || size > PACER_SLOT_SIZE) {
        pacer->dropped++;
        return PACE_DROPPED;
    }
    if (pacer->slots == NULL) {
        pacer->slots = malloc((size_t)PACER_SLOTS * PACER_SLOT_SIZE);
        pacer->sizes = malloc(PACER_SLOTS * sizeof(uint16_t));
        if (pacer->slots == NULL || pacer->sizes == NULL) {
            pacer_free(pacer);
            PyErr_NoMemory();
            return PACE_ERROR;
        }
    }
    int tail = (pacer->head + pacer->count) % PACER_SLOTS;
    memcpy(pacer->slots + (size_t)tail * PACER_SLOT_SIZE, p, (size_t)size);
    pacer->sizes[tail] = (uint16_t)size;
    pacer->count++;
    pacer->queued_bytes += size;
    pacer->paced++;
    return PACE_QUEUED;
}

int
pacer_next(Pacer *pacer, unsigned char *out)
{
    if (pacer->count == 0)
        return 0;
    refill(pacer);
    if (pacer->tokens <= 0 && pacer->rate > 0)
        return 0;
    int head = pacer->head, size = pacer->sizes[head];
    memcpy(out, pacer->slots + (size_t)head * PACER_SLOT_SIZE, (size_t)size);
    pacer->head = (head + 1) % PACER_SLOTS;
    pacer->count--;
    pacer->queued_bytes -= size;
    pacer->tokens -= size;
    return size;
}

void
pacer_free(Pacer *pacer)
{
    free(pacer->slots);
    free(pacer->sizes);
    pacer->slots = NULL;
    pacer->sizes = NULL;
    pacer->head = pacer->count = 0;
    pacer->queued_bytes = 0;
}
