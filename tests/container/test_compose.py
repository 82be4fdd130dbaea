"""docker-compose.yml, parsed (no Docker engine here): the services, their health checks, restart
policies, start order, volumes and the settings they pass."""
from __future__ import annotations

import pytest

from tests.container import image

SERVICES = {"api", "worker", "postgres", "a1111-simulator"}
APP_SERVICES = ("api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    return image.compose()


def test_it_has_the_api_the_worker_postgres_and_the_simulator(compose):
    assert set(compose["services"]) == SERVICES


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_restarts_and_has_an_exec_form_health_check(compose, name):
    service = compose["services"][name]
    assert service["restart"] in ("unless-stopped", "always")
    check = service["healthcheck"]
    assert check["test"][0] == "CMD" and len(check["test"]) > 1
    assert {"interval", "timeout", "retries"} <= check.keys()


def test_api_and_worker_are_the_image_with_its_two_other_commands(compose):
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["build"]["context"] == "." and "target" not in service["build"]  # the default stage
        assert service["image"] == compose["services"]["api"]["image"]
        assert service["init"] is True
    assert compose["services"]["api"]["command"] == ["python", "wsgi.py"]
    assert compose["services"]["worker"]["command"] == ["python", "-m", "worker_fn"]
    assert compose["services"]["api"]["healthcheck"]["test"][1:] == image.healthcheck()[1]
    assert compose["services"]["worker"]["healthcheck"]["test"][1:] == ["python", "scripts/healthcheck.py", "--worker"]


def test_api_and_worker_start_once_postgres_is_healthy(compose):
    for name in APP_SERVICES:
        assert compose["services"][name]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_worker_scales(compose):
    worker = compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker


def test_the_stop_grace_periods_outlast_the_shutdown_graces(compose):
    for name, variable in (("api", "API_SHUTDOWN_GRACE"), ("worker", "WORKER_SHUTDOWN_GRACE")):
        service = compose["services"][name]
        grace = float(image.compose_env(name, API_TOKENS="t")[variable])
        assert float(service["stop_grace_period"].removesuffix("s")) > grace


def test_data_lives_in_named_volumes(compose):
    declared = set(compose["volumes"])
    used = {mount.split(":")[0] for service in compose["services"].values() for mount in service.get("volumes", [])}
    assert used and used <= declared  # every mount is a named volume, none a host path
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]


def test_the_services_share_one_postgres_database_and_need_api_tokens(compose):
    for name in APP_SERVICES:
        env = image.compose_env(name, API_TOKENS="demo:t", POSTGRES_PASSWORD="pw")
        assert env["DATABASE_URL"] == "postgresql://a1111:pw@postgres:5432/a1111"
        assert env["A1111_BASE_URL"] == "http://a1111-simulator:7860"
        with pytest.raises(AssertionError, match="API_TOKENS is required"):
            image.compose_env(name)  # compose refuses to start without a token: no silent dev token
    postgres = compose["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-a1111}"


def test_the_simulator_is_a_demo_profile_built_from_its_own_stage(compose):
    simulator = compose["services"]["a1111-simulator"]
    assert simulator["profiles"] == ["demo"] and simulator["build"]["target"] == "simulator"
    assert "simulator" in {stage.name for stage in image.stages()}
    assert not any("a1111-simulator" in compose["services"][name].get("depends_on", {}) for name in APP_SERVICES)


def test_the_api_publishes_its_port_on_loopback_by_default(compose):
    [port] = compose["services"]["api"]["ports"]
    assert port == "${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"
