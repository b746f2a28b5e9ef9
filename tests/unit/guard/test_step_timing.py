"""The step-time histogram, its file and the thread that publishes it."""

import pytest

from guard import step_timing
from guard.step_timing import BUCKETS, Publisher, Snapshot, StepHistogram


@pytest.mark.parametrize("seconds, bucket", [
    (0.00005, 0), (0.0001, 0), (0.00011, 1), (0.003, 5), (1.0, len(BUCKETS) - 1), (7.0, len(BUCKETS)),
])
def test_observe_picks_the_bucket_of_its_upper_bound(seconds, bucket):
    histogram = StepHistogram()
    histogram.observe(seconds)
    snapshot = histogram.snapshot()
    assert snapshot.counts[bucket] == 1 and snapshot.count == 1 and snapshot.sum == seconds


def test_cumulative_buckets_end_with_inf_and_the_count():
    histogram = StepHistogram()
    for seconds in (0.00005, 0.0004, 0.0004, 2.0):
        histogram.observe(seconds)
    rows = histogram.snapshot().cumulative()
    assert rows[0] == ("0.0001", 1) and rows[2] == ("0.0005", 3)
    assert rows[-2] == ("1.0", 3) and rows[-1] == ("+Inf", 4)


def test_snapshots_add_up():
    a, b = Snapshot.empty(), Snapshot((1,) + (0,) * len(BUCKETS), 0.5)
    assert (a + b + b).counts[0] == 2 and (a + b + b).sum == 1.0


def test_file_round_trip_and_unreadable_files(tmp_path):
    path = tmp_path / "engine.json"
    assert step_timing.read(path) is None  # nothing published yet
    snapshot = Snapshot(tuple(range(len(BUCKETS) + 1)), 1.25)
    step_timing.write(path, snapshot)
    assert step_timing.read(path) == snapshot
    assert [p.name for p in tmp_path.iterdir()] == ["engine.json"]  # no tmp file left behind
    path.write_text('{"buckets": [1.0], "counts": [0, 0], "sum": 0}')  # other buckets
    assert step_timing.read(path) is None
    path.write_text("{")
    assert step_timing.read(path) is None


def test_publisher_writes_only_what_changed(tmp_path):
    histogram, path = StepHistogram(), tmp_path / "e.json"
    publisher = Publisher(histogram, path, interval=3600)
    publisher.publish()
    assert not path.exists()  # nothing observed: nothing written
    histogram.observe(0.002)
    publisher.publish()
    assert step_timing.read(path).count == 1
    path.unlink()
    publisher.publish()
    assert not path.exists()  # unchanged since the last write


def test_publisher_thread_writes_and_survives_a_missing_folder(tmp_path):
    histogram = StepHistogram()
    publisher = Publisher(histogram, tmp_path / "gone" / "e.json", interval=0.01).start()
    histogram.observe(0.002)
    publisher.stop()  # the last write fails quietly: the folder does not exist
    publisher = Publisher(histogram, tmp_path / "e.json", interval=0.01).start()
    publisher.stop()
    assert step_timing.read(tmp_path / "e.json").count == 1


def test_publishing_needs_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(step_timing.ENV, raising=False)
    assert step_timing.publish_from_env(StepHistogram(), "1") is None
    monkeypatch.setenv(step_timing.ENV, str(tmp_path))
    histogram = StepHistogram()
    publisher = step_timing.publish_from_env(histogram, "123")
    histogram.observe(0.001)
    publisher.stop()
    assert step_timing.read(tmp_path / "123.json").count == 1
