"""Prometheus metrics of the whole service, read from the job store at each scrape (GET /metrics).

The store is the source of truth, so the numbers are the service's, not one process's: every API
replica (and Lambda) answers the same values, and nothing is lost when a process restarts. Counters
(`*_total`) are counts of rows, so they only grow while rows are kept.
"""
from __future__ import annotations

import typing

import prometheus_client
from prometheus_client import core as prometheus_core
from prometheus_client import registry as prometheus_registry
from prometheus_client import utils as prometheus_utils

from chalicelib import store
from chalicelib.store import base as store_base
from chalicelib.store import stats as stats_module

# The classic text format, which every Prometheus version reads.
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_PLAIN_0_0_4
PREFIX = "a1111_async"


class StoreCollector(prometheus_registry.Collector):
    """Turns the stats port's aggregates into metric families, at collection time."""

    def __init__(self, stats: stats_module.JobStats) -> None:
        self.stats = stats

    def collect(self) -> typing.Iterator[prometheus_core.Metric]:
        jobs = prometheus_core.GaugeMetricFamily(f"{PREFIX}_jobs", "Jobs in the store by state.", labels=["status"])
        for status, count in self.stats.jobs_by_status().items():
            jobs.add_metric([status], count)
        yield jobs

        queue_wait = prometheus_core.HistogramMetricFamily(
            f"{PREFIX}_job_queue_wait_seconds", "Time from submit to the first start, of jobs that started.")
        _add_histogram(queue_wait, [], self.stats.queue_wait(bounds=stats_module.QUEUE_WAIT_BOUNDS))
        yield queue_wait

        run_time = prometheus_core.HistogramMetricFamily(
            f"{PREFIX}_job_run_seconds", "Time from the first start to the end, of finished jobs, by final state.",
            labels=["status"])
        for status, histogram in sorted(self.stats.run_time(bounds=stats_module.RUN_TIME_BOUNDS).items()):
            _add_histogram(run_time, [status], histogram)
        yield run_time

        a1111_errors = prometheus_core.CounterMetricFamily(
            f"{PREFIX}_a1111_errors", "Failed A1111 calls that ended an attempt (unavailable: retried or "
            "out of attempts; rejected: A1111 refused the request; bad_response: unreadable answer).",
            labels=["kind"])
        for code, count in sorted(self.stats.a1111_errors().items()):
            a1111_errors.add_metric([code.removeprefix(stats_module.A1111_ERROR_PREFIX)], count)
        yield a1111_errors

        deliveries = self.stats.webhook_deliveries()
        if deliveries is not None:
            family = prometheus_core.GaugeMetricFamily(
                f"{PREFIX}_webhook_deliveries", "Webhook deliveries by state (pending: to be (re)tried; delivered: "
                "a 2xx answer; failed: retries exhausted, 410 Gone or refused).", labels=["status"])
            for status, count in deliveries.items():
                family.add_metric([status], count)
            yield family
        attempts = self.stats.webhook_attempts()
        if attempts is not None:
            family = prometheus_core.CounterMetricFamily(
                f"{PREFIX}_webhook_attempts", "Finished webhook POSTs by outcome (success: 2xx; http_error: "
                "another status; no_response: network error, timeout, refused address or dispatcher lost).",
                labels=["outcome"])
            for outcome, count in attempts.items():
                family.add_metric([outcome], count)
            yield family


def render(job_store: store_base.JobStore) -> str:
    """The metrics in Prometheus's text format; raises `StoreUnavailable` when the store is down."""
    registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store.make_stats(job_store)))
    return prometheus_client.generate_latest(registry).decode("utf-8")


def _add_histogram(family: prometheus_core.HistogramMetricFamily, labels: list[str],
                   histogram: stats_module.Histogram) -> None:
    buckets = [(prometheus_utils.floatToGoString(bound), count) for bound, count in histogram.buckets]
    family.add_metric(labels, buckets + [("+Inf", histogram.count)], sum_value=histogram.total)
