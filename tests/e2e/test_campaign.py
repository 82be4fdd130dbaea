"""The fault campaign (bench/campaign.py) in its short form: a few hundred jobs through real
processes, a kill -9 of the API during a submit burst and of a worker mid-job, slow clients, then
retention; every job the API accepted completes exactly once."""
from __future__ import annotations

import dataclasses

import pytest

from bench import campaign


@pytest.mark.both_databases
def test_the_short_campaign_loses_nothing_and_runs_nothing_twice(tmp_path, database_url):
    plan = campaign.SHORT if database_url.startswith("sqlite") else \
        dataclasses.replace(campaign.SHORT, database="postgres")
    figures = campaign.Campaign(plan, tmp_path, database_url).run()
    print(campaign.report(figures))
    assert figures.accepted >= plan.jobs and figures.completed == figures.accepted
    assert figures.lost == [] and figures.completed_twice == []
    assert (figures.api_kills, figures.worker_kills) == (1, 1)
    assert figures.runs_lost >= 1 and figures.extra_attempts >= 1  # the killed worker's job ran again
    assert figures.slow_clients["served"] == 20
    assert figures.jobs_after_retention == 0
    if plan.database == "sqlite":
        assert figures.db_bytes["after_retention"] < figures.db_bytes["loaded"]
