// Adaptive stream: what each received video track is shown in, measured by the browser.
//
// sfu-client.js asks this module, per remote track, for the largest size (in device pixels) at
// which one of the <video> elements registered for it is rendered, or whether none is visible
// at all (scrolled out, display:none, zero-sized, or the page hidden). It turns that into
// `setTrackSettings` (docs/protocol.md, "Adaptive stream"): a small tile asks for a small layer,
// a hidden one pauses the track, so nobody receives pixels nobody sees.
//
// Changes are reported at most once per `debounceMs` (the latest state then): resizing a window
// or scrolling a grid sends one message, not one per frame.

const MAX_DIMENSION = 16384; // the protocol's bound for maxWidth / maxHeight

/**
 * @typedef {object} View        how a track is shown now
 * @property {boolean} paused    no registered element is visible
 * @property {number} [width]    the largest rendered width of its visible elements, device pixels
 * @property {number} [height]   likewise the largest height
 *
 * @typedef {object} Observed    one registered element
 * @property {string} trackId
 * @property {number|null} width   null until the ResizeObserver has reported
 * @property {number|null} height
 * @property {boolean|null} intersecting  null until the IntersectionObserver has reported
 */

export class AdaptiveStream {
  /**
   * @param {(trackIds: string[]) => void} onChange called (debounced) with the tracks whose view changed
   * @param {{debounceMs?: number}} [options]
   */
  constructor(onChange, options = {}) {
    this._onChange = onChange;
    this._debounceMs = options.debounceMs ?? 300;
    /** @type {Map<Element, Observed>} */
    this._elements = new Map();
    /** @type {Set<string>} */
    this._dirty = new Set();
    this._timer = 0;
    this._pageVisible = document.visibilityState !== "hidden";
    this._resize = new ResizeObserver((entries) => {
      for (const entry of entries) this._measured(entry.target, (o) => Object.assign(o, renderedSize(entry)));
    });
    this._intersection = new IntersectionObserver((entries) => {
      for (const entry of entries) this._measured(entry.target, (o) => (o.intersecting = entry.isIntersecting));
    });
    this._onVisibility = () => {
      const visible = document.visibilityState !== "hidden";
      if (visible === this._pageVisible) return;
      this._pageVisible = visible;
      for (const observed of this._elements.values()) this._mark(observed.trackId);
    };
    document.addEventListener("visibilitychange", this._onVisibility);
  }

  /**
   * Report how `element` shows `trackId` (an element shows one track: registering it for
   * another track moves it). Returns a function that stops observing it.
   * @param {string} trackId @param {Element} element
   */
  observe(trackId, element) {
    const previous = this._elements.get(element);
    if (previous?.trackId === trackId) return () => this.unobserve(element);
    if (previous) this.unobserve(element);
    this._elements.set(element, { trackId, width: null, height: null, intersecting: null });
    this._resize.observe(element);
    this._intersection.observe(element);
    return () => this.unobserve(element);
  }

  /** Stop observing `element`; its track is reported again (without it). @param {Element} element */
  unobserve(element) {
    const observed = this._elements.get(element);
    if (!observed) return;
    this._elements.delete(element);
    this._resize.unobserve(element);
    this._intersection.unobserve(element);
    this._mark(observed.trackId);
  }

  /** The track is no longer received: stop observing its elements, report nothing. @param {string} trackId */
  forget(trackId) {
    for (const [element, observed] of [...this._elements]) {
      if (observed.trackId !== trackId) continue;
      this._elements.delete(element);
      this._resize.unobserve(element);
      this._intersection.unobserve(element);
    }
    this._dirty.delete(trackId);
  }

  /**
   * How `trackId` is shown now; null when no element of it is registered, or none has been
   * measured yet (nothing is known: ask for nothing).
   * @param {string} trackId @returns {View|null}
   */
  view(trackId) {
    let measured = false;
    let width = 0;
    let height = 0;
    for (const o of this._elements.values()) {
      if (o.trackId !== trackId || o.width === null || o.intersecting === null) continue;
      measured = true;
      if (!this._pageVisible || !o.intersecting || o.width === 0 || o.height === 0) continue;
      width = Math.max(width, o.width);
      height = Math.max(height, /** @type {number} */ (o.height));
    }
    if (!measured) return null;
    if (width === 0) return { paused: true };
    return { paused: false, width: Math.min(width, MAX_DIMENSION), height: Math.min(height, MAX_DIMENSION) };
  }

  close() {
    clearTimeout(this._timer);
    this._resize.disconnect();
    this._intersection.disconnect();
    document.removeEventListener("visibilitychange", this._onVisibility);
    this._elements.clear();
    this._dirty.clear();
  }

  /** @param {Element} element @param {(o: Observed) => void} update */
  _measured(element, update) {
    const observed = this._elements.get(element);
    if (!observed) return;
    update(observed);
    this._mark(observed.trackId);
  }

  _mark(trackId) {
    this._dirty.add(trackId);
    if (this._timer) return;
    // not restarted by later changes: a report at most debounceMs after the first change
    this._timer = setTimeout(() => {
      this._timer = 0;
      const trackIds = [...this._dirty];
      this._dirty.clear();
      if (trackIds.length > 0) this._onChange(trackIds);
    }, this._debounceMs);
  }
}

/**
 * The element's content box in device pixels: what a decoder's frames should fill. (Not
 * devicePixelContentBoxSize: Chromium leaves an emulated device scale factor out of it.)
 * @param {ResizeObserverEntry} entry @returns {{width: number, height: number}}
 */
function renderedSize(entry) {
  const ratio = window.devicePixelRatio || 1;
  return {
    width: Math.round(entry.contentRect.width * ratio),
    height: Math.round(entry.contentRect.height * ratio),
  };
}
