/*
 * Pacing one connection's RTP: a token bucket at the connection's pacing rate, and a FIFO for
 * what exceeds it, drained by the loop's timer (Egress.drain). See _pacer.c.
 */
#ifndef SFU_PACER_H
#define SFU_PACER_H

#include <stdint.h>

#define PACER_SLOTS 512 /* about 0.6 MB of video at most, allocated on first use */
#define PACER_SLOT_SIZE 2048 /* MAX_PACKET */

typedef struct {
    int64_t rate;         /* bytes per second; 0: not paced */
    double tokens;        /* bytes that may go now; negative after a send past them */
    int64_t refill_us;
    unsigned char *slots; /* PACER_SLOTS of PACER_SLOT_SIZE, lazily */
    uint16_t *sizes;
    int head, count;
    long long queued_bytes;
    uint64_t unpaced[2];  /* payload types sent at once (audio): a bit per PT */
    unsigned long long paced;   /* packets that waited in the queue */
    unsigned long long dropped; /* packets that found it full */
} Pacer;

/* What to do with a packet of size octets at p: PACE_SEND now, or PACE_QUEUED (copied), or
 * PACE_DROPPED (the queue is full), or PACE_ERROR (out of memory, exception set). */
enum { PACE_SEND = 0, PACE_QUEUED = 1, PACE_DROPPED = 2, PACE_ERROR = -1 };
int pacer_admit(Pacer *pacer, const unsigned char *p, int size, int bypass);

/* The oldest queued packet, copied to out, if the budget allows it now: its size, else 0. */
int pacer_next(Pacer *pacer, unsigned char *out);

void pacer_free(Pacer *pacer);

#endif
