"""Cold start: settings come from the environment without pydantic-settings (which imports asyncio), so a
start that names no AWS source loads neither (keywords win over the environment, names are
case-insensitive), and the A1111 request models are built at the first submit, not at import."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pydantic
import pytest

import app as app_module
from chalicelib import config


def test_importing_the_app_and_reading_the_settings_loads_no_pydantic_settings_nor_asyncio():
    lazy = ["pydantic_settings", "asyncio", "boto3"]
    code = (f"import sys, app; from chalicelib import config; config.get_settings(); "
            f"print([name for name in {lazy!r} if name in sys.modules])")
    env = {key: value for key, value in os.environ.items() if key not in {"CONFIG_SSM_PATH", "CONFIG_SECRET_ID"}}
    loaded = subprocess.run([sys.executable, "-c", code], cwd=pathlib.Path(app_module.__file__).parent,
                            capture_output=True, text=True, check=True, env=env)
    assert loaded.stdout.strip() == "[]"


def test_environment_names_are_case_insensitive_and_values_are_validated(monkeypatch):
    monkeypatch.setenv("JOB_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("webhook_allow_private", "yes")
    settings = config.Settings()
    assert settings.job_max_attempts == 7
    assert settings.webhook_allow_private is True


def test_a_keyword_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("JOB_MAX_ATTEMPTS", "7")
    assert config.Settings(job_max_attempts=2).job_max_attempts == 2


def test_a_bad_value_in_the_environment_is_refused_without_echoing_it(monkeypatch):
    monkeypatch.setenv("JOB_MAX_ATTEMPTS", "0-secret-value")
    with pytest.raises(pydantic.ValidationError) as failure:
        config.Settings()
    assert "job_max_attempts" in str(failure.value)
    assert "0-secret-value" not in str(failure.value)


def test_unknown_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("NOT_A_SETTING", "x")
    assert not hasattr(config.Settings(), "not_a_setting")


def test_the_a1111_request_models_are_built_at_the_first_submit_not_at_import():
    code = ("import app; from chalicelib import request_models as m; "
            "print([k.__name__ for k in (m.StableDiffusionProcessingTxt2Img, m.StableDiffusionProcessingImg2Img, "
            "m.JobOptions) if k.__pydantic_complete__])")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=pathlib.Path(app_module.__file__).parent,
                            capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
