"""Metrics: the engine figures, read from each engine when scraped and summed over the engines; the
guard's blocks, counted per target."""

from types import SimpleNamespace

from guard import step_timing
from guard.step_timing import StepHistogram
from server.ops import metrics
from server.engine import EngineStats


def engine(path=None, running=0, waiting=0, stats=True):
    return SimpleNamespace(stats=lambda: EngineStats(running, waiting, path) if stats else None)


def test_nothing_before_engines_are_watched():
    assert b"guard_step_seconds" not in metrics.render(metrics.create())
    upstream = metrics.create()
    upstream.engines.watch([engine(stats=False)])  # the full proxy: the guard runs in the upstream's process
    assert b"guard_step_seconds" not in metrics.render(upstream)


def test_engine_figures_are_summed_at_scrape_time(tmp_path):
    app_metrics = metrics.create()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    app_metrics.engines.watch([engine(a, running=2, waiting=1), engine(b, running=1), engine(stats=False)])
    text = metrics.render(app_metrics).decode()
    assert "guard_step_seconds_count 0.0" in text  # nothing published yet
    assert "guard_engine_requests_running 3.0" in text and "guard_engine_requests_waiting 1.0" in text
    for path, seconds in ((a, 0.0003), (b, 0.002)):
        histogram = StepHistogram()
        histogram.observe(seconds)
        step_timing.write(path, histogram.snapshot())
    text = metrics.render(app_metrics).decode()
    assert "guard_step_seconds_count 2.0" in text and "guard_step_seconds_sum 0.0023" in text
    assert 'guard_step_seconds_bucket{le="0.0005"} 1.0' in text
    assert 'guard_step_seconds_bucket{le="+Inf"} 2.0' in text


def test_rewinds_and_cuts_are_counted_per_target():
    app_metrics = metrics.create()
    metrics.observe_blocks(app_metrics, ("harry-potter", "einstein", "harry-potter"), ("einstein",))
    metrics.observe_blocks(app_metrics, ("einstein",), ())
    text = metrics.render(app_metrics).decode()
    assert 'guard_rewinds_total{target="harry-potter"} 2.0' in text
    assert 'guard_rewinds_total{target="einstein"} 2.0' in text
    assert 'guard_content_filtered_total{target="einstein"} 1.0' in text
    assert 'guard_content_filtered_total{target="harry-potter"}' not in text
