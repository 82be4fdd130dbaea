"""Secrets from SSM Parameter Store and Secrets Manager (moto), under what the environment sets."""
from __future__ import annotations

import json

import boto3
import pytest

from chalicelib import config
from tests.aws import conftest as support


@pytest.fixture
def clean_settings():
    config.get_settings.cache_clear()
    yield
    config.get_settings.cache_clear()


def test_settings_come_from_an_ssm_path_with_secure_strings_decrypted(aws, monkeypatch, clean_settings):
    ssm = boto3.client("ssm", region_name=support.REGION)
    ssm.put_parameter(Name="/a1111-async/prod/DATABASE_URL", Value="postgresql://app:pw@db/jobs", Type="SecureString")
    ssm.put_parameter(Name="/a1111-async/prod/API_TOKENS", Value="ops:tok-from-ssm", Type="SecureString")
    ssm.put_parameter(Name="/a1111-async/prod/JOB_MAX_ATTEMPTS", Value="5", Type="String")
    ssm.put_parameter(Name="/other-app/DATABASE_URL", Value="postgresql://not-ours", Type="SecureString")
    monkeypatch.setenv("CONFIG_SSM_PATH", "/a1111-async/prod")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("API_TOKENS", raising=False)
    monkeypatch.setenv("JOB_MAX_ATTEMPTS", "2")  # the environment wins over the parameter store

    settings = config.get_settings()

    assert settings.database_url == "postgresql://app:pw@db/jobs"
    assert settings.token_map() == {"tok-from-ssm": "ops"}
    assert settings.job_max_attempts == 2


def test_settings_come_from_a_secrets_manager_secret(aws, monkeypatch, clean_settings):
    secrets = boto3.client("secretsmanager", region_name=support.REGION)
    arn = secrets.create_secret(Name="a1111-async/prod", SecretString=json.dumps(
        {"DATABASE_URL": "postgresql://app:pw2@db/jobs", "API_TOKENS": "ops:tok-from-secret"}))["ARN"]
    monkeypatch.setenv("CONFIG_SECRET_ID", arn)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("API_TOKENS", raising=False)

    settings = config.get_settings()

    assert settings.database_url == "postgresql://app:pw2@db/jobs"
    assert settings.token_map() == {"tok-from-secret": "ops"}


def test_without_either_no_aws_call_is_made(monkeypatch, clean_settings):
    monkeypatch.delenv("CONFIG_SSM_PATH", raising=False)
    monkeypatch.delenv("CONFIG_SECRET_ID", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # would refuse, if anything called AWS
    assert config.get_settings().queue_backend in {"local", "sqs"}

