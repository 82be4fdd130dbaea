"""The development token and the checkout's data directory: where they live, and when `chalice local`
creates the token (the dev stage under the Chalice CLI's `local` only)."""
from __future__ import annotations

import json
import stat

import pytest

from chalicelib import config
from chalicelib import dev_token
from chalicelib import local_data

CHALICE_LOCAL = ["/x/.venv/bin/chalice", "local", "--port", "8000"]
DEV_STAGE = {"AWS_CHALICE_CLI_MODE": "true", "DEV_TOKEN_STAGE": "true"}


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    config.get_settings.cache_clear()
    yield tmp_path / "data-home"
    config.get_settings.cache_clear()


def test_the_default_database_is_in_the_checkouts_data_directory_outside_the_project(data_home):
    url = config.get_settings().database_url
    assert url == f"sqlite:///{local_data.directory() / 'jobs.db'}"
    assert local_data.directory().parent == data_home / "a1111-async"
    assert local_data.ROOT not in local_data.directory().parents


def test_without_xdg_data_home_the_directory_is_under_the_users_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for value in ("", "relative/ignored"):
        monkeypatch.setenv("XDG_DATA_HOME", value)
        assert local_data.directory().parent == tmp_path / ".local" / "share" / "a1111-async"


def test_each_checkout_has_a_directory_of_its_own(tmp_path):
    one, other = local_data.directory(tmp_path / "a" / "repo"), local_data.directory(tmp_path / "b" / "repo")
    assert one != other and one.name.startswith("repo-") and one.parent == other.parent


def test_a_database_url_that_is_set_wins(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    assert config.get_settings().database_url == "sqlite:///elsewhere.db"


def test_the_token_is_created_once_readable_by_its_owner_only():
    token = dev_token.read_or_create()
    assert len(token) >= 32 and dev_token.read_or_create() == token
    assert stat.S_IMODE(dev_token.path().stat().st_mode) == 0o600


def test_chalice_local_on_the_dev_stage_without_api_tokens_gets_the_token(capsys):
    environ = dict(DEV_STAGE)
    token = dev_token.install_under_chalice_local(environ, CHALICE_LOCAL)
    assert token == dev_token.read_or_create() and environ["API_TOKENS"] == f"dev:{token}"
    assert f"development token (API_TOKENS was not set): {token}" in capsys.readouterr().out


@pytest.mark.parametrize(("environ", "argv"), [
    ({**DEV_STAGE, "API_TOKENS": "me:mine"}, CHALICE_LOCAL),  # the user's tokens
    ({"AWS_CHALICE_CLI_MODE": "true"}, CHALICE_LOCAL),  # chalice local --stage prod
    ({"DEV_TOKEN_STAGE": "true", "AWS_LAMBDA_FUNCTION_NAME": "api_handler"}, ["/var/runtime/bootstrap"]),  # Lambda
    ({"DEV_TOKEN_STAGE": "true"}, ["wsgi.py"]),  # not the Chalice CLI
    (DEV_STAGE, ["chalice", "package", "build"]),
    (DEV_STAGE, ["chalice", "--project-dir", "local", "deploy"]),
])
def test_nowhere_else(environ, argv):
    before = dict(environ)
    assert dev_token.install_under_chalice_local(environ, argv) is None
    assert environ == before and not dev_token.path().exists()


@pytest.mark.parametrize(("argv", "command"), [
    (["chalice", "local"], "local"),
    (["chalice", "--debug", "--project-dir", "/p", "local", "--stage", "dev"], "local"),
    (["chalice", "--project-dir", "local", "package", "out"], "package"),
    (["chalice", "--version"], None),
])
def test_the_chalice_command_is_read_from_the_command_line(argv, command):
    assert dev_token.chalice_command(argv) == command


def test_only_the_dev_stage_sets_the_stage_variable():
    stages = json.loads((local_data.ROOT / ".chalice" / "config.json").read_text())["stages"]
    assert stages["dev"]["environment_variables"] == {dev_token.STAGE_VARIABLE: "true"}
    for name, stage in stages.items():
        variables = [stage.get("environment_variables", {})] + [
            function.get("environment_variables", {}) for function in stage.get("lambda_functions", {}).values()]
        assert name == "dev" or not any(dev_token.STAGE_VARIABLE in v for v in variables), name
