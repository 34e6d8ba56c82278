"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

Three families are enough to run the server: requests by endpoint and status, request
latency as a histogram, and the size of each forward pass's batch (how well dynamic
batching is working). Observations come from the event loop and the inference thread,
so one lock guards the counts.
"""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

# Seconds; from a fast cached forward (~1 ms) to a slow Grad-CAM on a big model.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-bucket histogram as Prometheus expects (``le`` upper bounds, plus +Inf)."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(buckets) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, c in zip(list(self.buckets) + ["+Inf"], self.counts):
            running += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        wrap = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{wrap} {self.total:.6f}", f"{name}_count{wrap} {self.n}"]
        return out


class ServerMetrics:
    """The server's counters; ``render()`` gives the ``/metrics`` body."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.rejected_full = 0
        self.queue_depth = 0

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)
            if status == 503:
                self.rejected_full += 1

    def observe_batch(self, size: int, queue_depth: int) -> None:
        with self._lock:
            self.batch_size.observe(size)
            self.queue_depth = queue_depth

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP reslab_requests_total HTTP requests by endpoint and status code.",
                     "# TYPE reslab_requests_total counter"]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'reslab_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += ["# HELP reslab_request_seconds Request latency in seconds.",
                      "# TYPE reslab_request_seconds histogram"]
            for endpoint, hist in sorted(self.latency.items()):
                lines += hist.lines("reslab_request_seconds", f'endpoint="{endpoint}"')
            lines += ["# HELP reslab_batch_size Images per forward pass (dynamic batching).",
                      "# TYPE reslab_batch_size histogram"]
            lines += self.batch_size.lines("reslab_batch_size")
            lines += ["# HELP reslab_queue_depth Requests waiting after the last batch was taken.",
                      "# TYPE reslab_queue_depth gauge", f"reslab_queue_depth {self.queue_depth}",
                      "# HELP reslab_rejected_total Requests refused with 503 (queue full).",
                      "# TYPE reslab_rejected_total counter",
                      f"reslab_rejected_total {self.rejected_full}"]
        return "\n".join(lines) + "\n"
