"""The guard's time per engine step, carried from the engine process to the server through a file.

The logits processor runs in vLLM's engine process, out of reach of the server's Prometheus
registry. There it fills a fixed-bucket histogram in memory (a bisect and two additions a step);
a daemon thread writes it, when it has changed, at most once a second (tmp file + os.replace) to
`$GUARD_STEP_STATS_DIR/<engine instance id>.json`, and the server reads that file when scraped.
Without the variable (the processor inside a plain `vllm serve`) nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from guard.files import write_atomically

__all__ = ["BUCKETS", "ENV", "Snapshot", "StepHistogram", "Publisher", "stats_path", "publish_from_env",
           "read", "write"]

log = logging.getLogger("guard.step_timing")
ENV = "GUARD_STEP_STATS_DIR"
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)  # seconds


@dataclass(frozen=True)
class Snapshot:
    counts: tuple[int, ...]  # observations per bucket, not cumulative; the last one is +Inf
    sum: float

    @classmethod
    def empty(cls) -> Snapshot:
        return cls((0,) * (len(BUCKETS) + 1), 0.0)

    @property
    def count(self) -> int:
        return sum(self.counts)

    def __add__(self, other: Snapshot) -> Snapshot:
        return Snapshot(tuple(a + b for a, b in zip(self.counts, other.counts)), self.sum + other.sum)

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus buckets: (upper bound, observations at or under it), ending with +Inf."""
        bounds = [repr(b) for b in BUCKETS] + ["+Inf"]
        total, rows = 0, []
        for bound, n in zip(bounds, self.counts):
            total += n
            rows.append((bound, total))
        return rows

    def to_json(self) -> str:
        return json.dumps({"buckets": list(BUCKETS), "counts": list(self.counts), "sum": self.sum})

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        if tuple(data["buckets"]) != BUCKETS or len(data["counts"]) != len(BUCKETS) + 1:
            raise ValueError("step stats written with other buckets")
        return cls(tuple(int(n) for n in data["counts"]), float(data["sum"]))


class StepHistogram:
    """Filled by one thread (the engine's), read by another: a snapshot may lag one observation."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1  # bucket i holds BUCKETS[i-1] < s <= BUCKETS[i]
        self.sum += seconds

    def snapshot(self) -> Snapshot:
        return Snapshot(tuple(self.counts), self.sum)


def stats_path(directory: str | Path, engine_id: str) -> Path:
    return Path(directory) / f"{engine_id}.json"


def write(path: Path, snapshot: Snapshot) -> None:
    """Atomically: a reader sees the previous file or this one, never half of it."""
    write_atomically(path, lambda tmp: tmp.write_text(snapshot.to_json()))


def read(path: Path) -> Snapshot | None:
    """The snapshot in `path`; None when there is none yet or it cannot be read."""
    try:
        return Snapshot.from_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("unreadable step stats %s: %s", path, exc)
        return None


class Publisher:
    """A daemon thread writing `histogram` to `path` every `interval` seconds when it has changed."""

    def __init__(self, histogram: StepHistogram, path: Path, interval: float = 1.0):
        self.histogram, self.path, self.interval = histogram, path, interval
        self._written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="guard-step-stats", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, after one last write."""
        self._stop.set()
        self._thread.join()
        self.publish()

    def publish(self) -> None:
        snapshot = self.histogram.snapshot()
        if snapshot.count == self._written:
            return
        try:
            write(self.path, snapshot)
            self._written = snapshot.count
        except OSError as exc:  # e.g. the server removed the folder while shutting the engine down
            log.debug("step stats not written to %s: %s", self.path, exc)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish()


def publish_from_env(histogram: StepHistogram, engine_id: str) -> Publisher | None:
    """Start publishing `histogram` for engine `engine_id` when $GUARD_STEP_STATS_DIR is set."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    return Publisher(histogram, stats_path(directory, engine_id)).start()
