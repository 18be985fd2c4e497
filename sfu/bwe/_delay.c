/*
 * Delay-based congestion detection (draft-ietf-rmcat-gcc-02 §5.2-§5.4), for one subscriber
 * connection: the packet groups of its transport-wide feedback in, a verdict out.
 *
 * It runs for every 5 ms group of every subscriber (200 per second each at video rates), which
 * in Python cost a tenth of the forwarding CPU; here a feedback message's groups are one call.
 * The rate control that acts on the verdict (sfu/bwe/aimd.py) runs once per message and stays
 * in Python. Pure: times are the groups' own (seconds), nothing reads a clock.
 *
 * The stages, in order, per group:
 *   - inter-group delta (§5.2, §5.3): d = arrival delta - send delta to the previous group. A
 *     group sent before the previous one (a reordered or repeated report) is skipped; an arrival
 *     delta more than MAX_DELAY_JUMP off its send delta is a clock jump or a gap, not queueing.
 *   - trendline: like libwebrtc's goog_cc since 2017, a trendline filter in place of the draft's
 *     Kalman filter. d is accumulated, the accumulation smoothed exponentially, and the
 *     least-squares slope of the smoothed delay against arrival time taken over the last `window`
 *     groups. Scaled by the deltas seen (at most 60) and a gain it is the modified trend m (ms),
 *     comparable with the detector's threshold.
 *   - the floor's slope caps a rising trend (libwebrtc has it as an option, off by default): the
 *     lowest accumulated delay among the window's first cap_groups groups and among its last,
 *     and the slope between those two points. A queue delays every packet, so its floor rises
 *     with it; a link that delays packets at random but keeps their order holds the ones behind
 *     a late packet and releases them in a bunch — the groups' delays jump up and down, their
 *     least-squares slope over 20 groups (~0.1 s) swings by tens of ms per 100 ms, but some
 *     group at each end was not held, and the floor stays.
 *   - over-use detector (§5.4): m against an adaptive threshold gamma that follows |m| quickly
 *     upwards (k_up) and slowly downwards (k_down), so the detector neither starves against a
 *     concurrent loss-based flow nor sleeps through real queueing. Over-use once m > gamma has
 *     lasted overusing_time (ms of send time) and two groups and m is not falling; under-use
 *     when m < -gamma (a queue draining).
 * A queue that no longer grows (a full drop-tail queue) has no trend: sfu/bwe/standing.py
 * watches the one-way delay's level, per feedback message.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <math.h>
#include <stddef.h>
#include <string.h>

#define MAX_WINDOW 100
#define MAX_DELAY_JUMP 3.0   /* s */
#define MAX_NUM_DELTAS 1000
#define TREND_DELTAS 60      /* the trend's scale stops growing here */
#define MIN_THRESHOLD 6.0    /* ms, §5.4 */
#define MAX_THRESHOLD 600.0  /* ms, §5.4 */
#define MAX_ADAPT_OFFSET 15.0 /* ms over the threshold: an outlier, the threshold ignores it */
#define MAX_UPDATE_STEP 100.0 /* ms: a gap does not jump the threshold */
#define CAP_GROUPS 7         /* the trend's floor: lowest delay of this many groups each end */

enum usage { NORMAL, OVERUSING, UNDERUSING };

typedef struct {
    PyObject_HEAD
    /* settings */
    int window;
    double smoothing, gain, k_up, k_down, overusing_time;
    /* inter-group deltas */
    int has_previous;
    double previous_send, previous_arrival;
    int has_last_delta; /* the last group given made a delta: last_send_delta, ..._arrival_ */
    double last_send_delta, last_arrival_delta;
    /* trendline */
    int num_deltas, has_first, count, head; /* count/head: the window's ring */
    double first_arrival, accumulated, smoothed, trend;
    double xs[MAX_WINDOW], ys[MAX_WINDOW], raws[MAX_WINDOW]; /* raws: accumulated, unsmoothed */
    int cap_groups; /* 0: no cap */
    /* detector */
    double threshold, time_over_using, previous_trend, last_update_ms, modified_trend;
    int overuse_count, has_last_update;
    enum usage state;
} DelayDetector;

static PyObject *usage_names[3];

/* The slope over the window (x: ms since the first arrival, y: smoothed delay, ms); 0 with
 * *ok = 0 when every x is equal. Two passes over at most MAX_WINDOW points: exact whatever the
 * call's length (hours of x do not cancel out). */
static double
window_slope(const DelayDetector *self, int *ok)
{
    double sx = 0, sy = 0, lo = INFINITY, hi = -INFINITY;
    int n = self->count;
    for (int i = 0; i < n; i++) {
        int at = (self->head + i) % self->window;
        sx += self->xs[at];
        sy += self->ys[at];
        lo = fmin(lo, self->xs[at]);
        hi = fmax(hi, self->xs[at]);
    }
    *ok = n >= 2 && hi > lo;
    if (!*ok)
        return 0.0;
    double mx = sx / n, my = sy / n, num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        int at = (self->head + i) % self->window;
        num += (self->xs[at] - mx) * (self->ys[at] - my);
        den += (self->xs[at] - mx) * (self->xs[at] - mx);
    }
    return num / den;
}

/* The lowest raw delay's point among `n` groups of the window from `from` on. */
static int
lowest_of(const DelayDetector *self, int from, int n)
{
    int best = (self->head + from) % self->window;
    for (int i = from + 1; i < from + n; i++) {
        int at = (self->head + i) % self->window;
        if (self->raws[at] < self->raws[best])
            best = at;
    }
    return best;
}

/* The slope between the lowest raw delays of the window's first and last cap_groups: how fast
 * the delay's floor rose. A queue raises every packet's delay, its floor too; jitter that holds
 * packets and releases them in bunches raises some of them only, and the floor stays. *ok = 0
 * when the two points are less than 1 ms apart. */
static double
floor_slope(const DelayDetector *self, int *ok)
{
    int early = lowest_of(self, 0, self->cap_groups);
    int late = lowest_of(self, self->count - self->cap_groups, self->cap_groups);
    double span = self->xs[late] - self->xs[early];
    *ok = span >= 1.0;
    return *ok ? (self->raws[late] - self->raws[early]) / span : 0.0;
}

/* One delta into the trendline; the modified trend (ms). */
static double
trend_update(DelayDetector *self, double send_delta, double arrival_delta, double arrival)
{
    if (self->num_deltas < MAX_NUM_DELTAS)
        self->num_deltas++;
    if (!self->has_first) {
        self->first_arrival = arrival;
        self->has_first = 1;
    }
    self->accumulated += (arrival_delta - send_delta) * 1000.0;
    self->smoothed = self->smoothing * self->smoothed + (1.0 - self->smoothing) * self->accumulated;
    int at;
    if (self->count < self->window) {
        at = (self->head + self->count) % self->window;
        self->count++;
    } else { /* full: the oldest point makes room */
        at = self->head;
        self->head = (self->head + 1) % self->window;
    }
    self->xs[at] = (arrival - self->first_arrival) * 1000.0;
    self->ys[at] = self->smoothed;
    self->raws[at] = self->accumulated;
    if (self->count == self->window) {
        int ok;
        double slope = window_slope(self, &ok);
        if (ok && slope > 0 && self->cap_groups) {
            int capped;
            double cap = floor_slope(self, &capped);
            if (capped && slope > cap)
                slope = cap;
        }
        if (ok)
            self->trend = slope;
    }
    int scale = self->num_deltas < TREND_DELTAS ? self->num_deltas : TREND_DELTAS;
    return scale * self->trend * self->gain;
}

/* gamma(i) = gamma(i-1) + dt * k * (|m| - gamma(i-1)), k_up above, k_down below (§5.4). */
static void
adapt_threshold(DelayDetector *self, double trend, double now_ms)
{
    if (!self->has_last_update) {
        self->last_update_ms = now_ms;
        self->has_last_update = 1;
    }
    double magnitude = fabs(trend);
    if (magnitude > self->threshold + MAX_ADAPT_OFFSET) {
        self->last_update_ms = now_ms;
        return;
    }
    double k = magnitude < self->threshold ? self->k_down : self->k_up;
    double step = fmin(fmax(now_ms - self->last_update_ms, 0.0), MAX_UPDATE_STEP);
    self->threshold += k * (magnitude - self->threshold) * step;
    self->threshold = fmin(fmax(self->threshold, MIN_THRESHOLD), MAX_THRESHOLD);
    self->last_update_ms = now_ms;
}

/* One group's verdict from its modified trend; send_delta and arrival in seconds. */
static void
detect(DelayDetector *self, double trend, double send_delta, int num_deltas, double arrival)
{
    self->modified_trend = trend;
    if (num_deltas < 2)
        return;
    if (trend > self->threshold) {
        /* time over-using counts in send time: half the first delta, the crossing happened
         * somewhere inside it */
        if (self->time_over_using < 0)
            self->time_over_using = send_delta * 500.0;
        else
            self->time_over_using += send_delta * 1000.0;
        self->overuse_count++;
        if (self->time_over_using > self->overusing_time && self->overuse_count > 1 &&
            trend >= self->previous_trend) {
            self->time_over_using = 0.0;
            self->overuse_count = 0;
            self->state = OVERUSING;
        }
    } else {
        self->time_over_using = -1.0;
        self->overuse_count = 0;
        self->state = trend < -self->threshold ? UNDERUSING : NORMAL;
    }
    self->previous_trend = trend;
    adapt_threshold(self, trend, arrival * 1000.0);
}

static void
on_group(DelayDetector *self, double send, double arrival)
{
    self->has_last_delta = 0;
    int had_previous = self->has_previous;
    if (had_previous && send <= self->previous_send)
        return;
    double send_delta = send - self->previous_send, arrival_delta = arrival - self->previous_arrival;
    self->has_previous = 1;
    self->previous_send = send;
    self->previous_arrival = arrival;
    if (!had_previous || fabs(arrival_delta - send_delta) > MAX_DELAY_JUMP)
        return;
    self->has_last_delta = 1;
    self->last_send_delta = send_delta;
    self->last_arrival_delta = arrival_delta;
    double trend = trend_update(self, send_delta, arrival_delta, arrival);
    detect(self, trend, send_delta, self->num_deltas, arrival);
}

static PyObject *
DelayDetector_update(DelayDetector *self, PyObject *groups)
{
    PyObject *seq = PySequence_Fast(groups, "groups must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *group = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) < 2) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_TypeError, "a group is a (send time, arrival time, ...) tuple");
            return NULL;
        }
        double send = PyFloat_AsDouble(PyTuple_GET_ITEM(group, 0));
        double arrival = PyFloat_AsDouble(PyTuple_GET_ITEM(group, 1));
        if ((send == -1.0 || arrival == -1.0) && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        on_group(self, send, arrival);
    }
    Py_DECREF(seq);
    return Py_NewRef(usage_names[self->state]);
}

static PyObject *
DelayDetector_restart_trend(DelayDetector *self, PyObject *Py_UNUSED(ignored))
{
    /* the deltas, the trendline's window and the detector's state start over; the threshold
     * and the scale (num_deltas) stay */
    self->has_previous = self->has_last_delta = 0;
    self->has_first = self->count = self->head = 0;
    self->accumulated = self->smoothed = self->trend = 0.0;
    self->modified_trend = self->previous_trend = 0.0;
    self->time_over_using = -1.0;
    self->overuse_count = 0;
    self->state = NORMAL;
    Py_RETURN_NONE;
}

static PyObject *
DelayDetector_detect(DelayDetector *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "detect(modified_trend, send_delta, num_deltas, arrival_time)");
        return NULL;
    }
    double trend = PyFloat_AsDouble(args[0]), send_delta = PyFloat_AsDouble(args[1]);
    long num_deltas = PyLong_AsLong(args[2]);
    double arrival = PyFloat_AsDouble(args[3]);
    if (PyErr_Occurred())
        return NULL;
    detect(self, trend, send_delta, (int)(num_deltas > MAX_NUM_DELTAS ? MAX_NUM_DELTAS : num_deltas),
           arrival);
    return Py_NewRef(usage_names[self->state]);
}

static int
DelayDetector_init(DelayDetector *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"window", "smoothing", "gain", "k_up", "k_down",
                               "overusing_time", "initial_threshold", "cap_groups", NULL};
    int window = 20;
    double smoothing = 0.9, gain = 4.0, k_up = 0.01, k_down = 0.00018, overusing_time = 10.0;
    double threshold = 12.5;
    int cap_groups = CAP_GROUPS;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$iddddddi", keywords, &window, &smoothing,
                                     &gain, &k_up, &k_down, &overusing_time, &threshold,
                                     &cap_groups))
        return -1;
    if (window < 2 || window > MAX_WINDOW) {
        PyErr_Format(PyExc_ValueError, "window must be 2..%d", MAX_WINDOW);
        return -1;
    }
    if (cap_groups < 0 || 2 * cap_groups > window) {
        PyErr_SetString(PyExc_ValueError, "cap_groups must be 0..window / 2");
        return -1;
    }
    memset((char *)self + offsetof(DelayDetector, window), 0,
           sizeof(DelayDetector) - offsetof(DelayDetector, window));
    self->window = window;
    self->smoothing = smoothing;
    self->gain = gain;
    self->k_up = k_up;
    self->k_down = k_down;
    self->overusing_time = overusing_time;
    self->threshold = threshold;
    self->cap_groups = cap_groups;
    self->time_over_using = -1.0;
    self->state = NORMAL;
    return 0;
}

static PyObject *
DelayDetector_get_state(DelayDetector *self, void *closure)
{
    (void)closure;
    return Py_NewRef(usage_names[self->state]);
}

static PyObject *
DelayDetector_get_last_delta(DelayDetector *self, void *closure)
{
    (void)closure;
    if (!self->has_last_delta)
        Py_RETURN_NONE;
    return Py_BuildValue("(dd)", self->last_send_delta, self->last_arrival_delta);
}

static PyMethodDef DelayDetector_methods[] = {
    {"update", (PyCFunction)DelayDetector_update, METH_O,
     "update(groups): a feedback message's completed groups, (send time, arrival time, ...) "
     "in send order; the detector's state after them"},
    {"detect", (PyCFunction)(void (*)(void))DelayDetector_detect, METH_FASTCALL,
     "detect(modified_trend, send_delta, num_deltas, arrival_time): the detector's stage alone"},
    {"restart_trend", (PyCFunction)DelayDetector_restart_trend, METH_NOARGS,
     "restart_trend(): forget the groups so far (the link was measured anew); the threshold "
     "stays"},
    {NULL},
};

static PyMemberDef DelayDetector_members[] = {
    {"threshold", T_DOUBLE, offsetof(DelayDetector, threshold), READONLY, "gamma (ms)"},
    {"trend", T_DOUBLE, offsetof(DelayDetector, trend), READONLY, "the last slope"},
    {"modified_trend", T_DOUBLE, offsetof(DelayDetector, modified_trend), READONLY,
     "the last modified trend m (ms)"},
    {"num_deltas", T_INT, offsetof(DelayDetector, num_deltas), READONLY, NULL},
    {NULL},
};

static PyGetSetDef DelayDetector_getset[] = {
    {"state", (getter)DelayDetector_get_state, NULL, "normal, overusing or underusing", NULL},
    {"last_delta", (getter)DelayDetector_get_last_delta, NULL,
     "(send delta, arrival delta) of the last group given, None if it gave none", NULL},
    {NULL},
};

static PyTypeObject DelayDetectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sfu.bwe._delay.DelayDetector",
    .tp_basicsize = sizeof(DelayDetector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Delay-based over-use detection of one connection (draft-ietf-rmcat-gcc-02 §5)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)DelayDetector_init,
    .tp_methods = DelayDetector_methods,
    .tp_members = DelayDetector_members,
    .tp_getset = DelayDetector_getset,
};

static struct PyModuleDef delay_module = {
    PyModuleDef_HEAD_INIT, .m_name = "sfu.bwe._delay", .m_size = -1,
};

PyMODINIT_FUNC
PyInit__delay(void)
{
    const char *names[3] = {"normal", "overusing", "underusing"};
    for (int i = 0; i < 3; i++)
        if (usage_names[i] == NULL && (usage_names[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    if (PyType_Ready(&DelayDetectorType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&delay_module);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "DelayDetector", (PyObject *)&DelayDetectorType) < 0 ||
        PyModule_AddObject(module, "MIN_THRESHOLD", PyFloat_FromDouble(MIN_THRESHOLD)) < 0 ||
        PyModule_AddObject(module, "MAX_THRESHOLD", PyFloat_FromDouble(MAX_THRESHOLD)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
