from collections.abc import Sequence

from sfu.bwe.delay import BandwidthUsage

#: the adaptive threshold's bounds (ms), draft-ietf-rmcat-gcc-02 §5.4
MIN_THRESHOLD: float
MAX_THRESHOLD: float

class DelayDetector:
    #: gamma (ms)
    threshold: float
    #: the last slope of the smoothed delay (ms per ms of arrival time)
    trend: float
    #: the last modified trend m (ms)
    modified_trend: float
    num_deltas: int
    state: BandwidthUsage
    #: (send delta, arrival delta) of the last group given; None if it gave none
    last_delta: tuple[float, float] | None
    def __init__(
        self,
        *,
        window: int = 20,
        smoothing: float = 0.9,
        gain: float = 4.0,
        k_up: float = 0.01,
        k_down: float = 0.00018,
        overusing_time: float = 10.0,
        initial_threshold: float = 12.5,
        cap_groups: int = 7,
    ) -> None: ...
    def update(self, groups: Sequence[tuple[float, float, int]], /) -> BandwidthUsage: ...
    def detect(
        self, modified_trend: float, send_delta: float, num_deltas: int, arrival_time: float, /
    ) -> BandwidthUsage: ...
    def restart_trend(self) -> None: ...
