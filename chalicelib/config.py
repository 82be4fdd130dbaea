"""Settings from the environment, read once.

Every knob of the service is an environment variable (documented in docs/configuration.md). Stage
defaults in `.chalice/config.json` never shadow a variable the user set, because the dev stage sets
none of them (only DEV_TOKEN_STAGE, read by chalicelib/dev_token.py).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import typing

import pydantic

from chalicelib import local_data

log = logging.getLogger(__name__)

# A delivery's claim must outlast its attempt by this much, to record the result (docs/webhooks.md, "Retries").
WEBHOOK_CLAIM_MARGIN_SECONDS = 2.0
LAMBDA_SYNC_WAIT_SECONDS = 25.0  # API Gateway answers within 29 s


# Generation-only A1111 options a job may set in `override_settings` (A1111 restores them after the job).
# No paths, file names, saving, memory or cache sizes, API or UI options: those change A1111 for everyone.
DEFAULT_ALLOWED_OVERRIDES = (
    "sd_model_checkpoint", "sd_vae", "sd_unet", "CLIP_stop_at_last_layers", "sdxl_clip_l_skip", "emphasis",
    "comma_padding_backtrack", "randn_source", "eta_noise_seed_delta", "eta_ancestral", "eta_ddim",
    "s_churn", "s_tmin", "s_tmax", "s_noise", "s_min_uncond", "sigma_min", "sigma_max", "rho",
    "always_discard_next_to_last_sigma", "sgm_noise_multiplier", "sd_noise_schedule", "beta_dist_alpha",
    "beta_dist_beta", "uni_pc_variant", "uni_pc_skip_type", "uni_pc_order", "uni_pc_lower_order_final",
    "token_merging_ratio", "token_merging_ratio_img2img", "token_merging_ratio_hr", "pad_cond_uncond",
    "initial_noise_multiplier", "img2img_extra_noise", "img2img_color_correction", "img2img_fix_steps",
    "img2img_background_color", "inpainting_mask_weight", "sd_vae_encode_method", "sd_vae_decode_method",
)
# Always-on scripts a job may pass arguments to: the face fixer and the guidance most clients send.
DEFAULT_ALLOWED_ALWAYSON_SCRIPTS = "ADetailer,ControlNet"


class Settings(pydantic.BaseModel):
    """All configuration of the API, the worker and the handlers.

    Built from the environment (names case-insensitive) under any keyword given; then, when named,
    SSM Parameter Store and Secrets Manager fill what the environment leaves unset, so that secrets
    such as DATABASE_URL and API_TOKENS never sit in a template or the repo. pydantic-settings (which
    imports asyncio) is loaded only for those two sources, never in a cold start without them."""

    # hide_input_in_errors: a refused setting never echoes its value (API_TOKENS, DATABASE_URL are secrets).
    model_config = pydantic.ConfigDict(extra="ignore", hide_input_in_errors=True, validate_default=True)

    def __init__(self, **values: typing.Any) -> None:
        super().__init__(**{**_aws_values(), **_environment_values(), **values})

    # Auth
    api_tokens: str = ""
    metrics_token: pydantic.SecretStr = pydantic.SecretStr("")  # opens GET /metrics only (docs/observability.md)

    # Backends
    database_url: str = pydantic.Field(default_factory=local_data.default_database_url)  # outside the project
    queue_backend: str = "local"
    jobs_queue_url: str = ""
    webhooks_queue_url: str = ""
    submissions_queue_url: str = ""
    image_store: str = "db"

    # A1111
    a1111_base_url: str = "http://127.0.0.1:7860"
    a1111_instances: str = ""  # JSON (or YAML) file of instances; overrides A1111_BASE_URL
    a1111_auth: str = ""
    a1111_timeout: float = pydantic.Field(600.0, gt=0)
    a1111_connect_timeout: float = pydantic.Field(5.0, gt=0)
    # After a generation call that ended without an answer (timeout, dropped connection) A1111 may
    # still be generating: it is interrupted and its slot held until it reports idle, this long at most.
    a1111_settle_seconds: float = pydantic.Field(60.0, ge=0)

    # Serving
    host: str = "127.0.0.1"
    port: int = 8000
    api_shutdown_grace: float = pydantic.Field(8.0, ge=0)  # seconds for requests in flight at SIGTERM

    # Jobs and workers
    job_max_attempts: int = pydantic.Field(3, ge=1)
    job_retry_base_seconds: float = pydantic.Field(2.0, ge=0)
    job_lease_seconds: float = pydantic.Field(30.0, gt=0)
    progress_interval: float = pydantic.Field(1.0, gt=0)
    heartbeat_interval: float = pydantic.Field(5.0, gt=0)
    sweep_interval: float = pydantic.Field(5.0, gt=0)
    worker_shutdown_grace: float = pydantic.Field(8.0, ge=0)
    queue_max_receives: int = pydantic.Field(10, ge=1)
    queue_visibility_timeout: float = pydantic.Field(60.0, gt=0)

    # Request limits
    max_body_bytes: int = pydantic.Field(32 * 1024 * 1024, gt=0)
    max_width: int = pydantic.Field(2048, gt=0)
    max_height: int = pydantic.Field(2048, gt=0)
    max_steps: int = pydantic.Field(150, gt=0)
    max_images: int = pydantic.Field(16, gt=0)
    max_prompt_length: int = pydantic.Field(10000, gt=0)

    # Webhooks (docs/webhooks.md)
    webhook_allow_private: bool = False
    webhook_max_inline_bytes: int = pydantic.Field(1024 * 1024, ge=0)
    webhook_send_secret_header: bool = True
    webhook_timeout: float = pydantic.Field(10.0, gt=0)
    webhook_retry_schedule: str = "5s,30s,2m,10m,30m,1h,2h,4h,8h"
    webhook_dispatcher_threads: int = pydantic.Field(4, ge=0)
    webhook_claim_seconds: float = pydantic.Field(60.0, gt=0)
    webhook_redeliver_interval: float = pydantic.Field(10.0, ge=0)  # per job; 0: no limit
    # Attempts in flight to one destination host at once, over all dispatchers: a tenant's slow or
    # hanging receivers hold at most this many dispatcher threads.
    webhook_host_concurrency: int = pydantic.Field(2, ge=1)
    public_base_url: str = ""

    # Models, LoRAs and A1111 discovery (docs/models.md)
    catalog_ttl: float = pydantic.Field(30.0, ge=0)
    catalog_timeout: float = pydantic.Field(10.0, gt=0)

    # Civitai enrichment of the model lists (docs/models.md, "Civitai")
    civitai_enabled: bool = False
    civitai_api_key: pydantic.SecretStr = pydantic.SecretStr("")  # never in a repr or a log line
    civitai_base_url: str = "https://civitai.com/api/v1"
    civitai_budget: float = pydantic.Field(1.5, gt=0)
    civitai_timeout: float = pydantic.Field(10.0, gt=0)
    civitai_concurrency: int = pydantic.Field(3, ge=1, le=16)
    civitai_cache_ttl: float = pydantic.Field(7 * 24 * 3600.0, ge=0)
    civitai_not_found_ttl: float = pydantic.Field(24 * 3600.0, ge=0)

    # AWS (docs/aws.md)
    config_ssm_path: str = ""  # settings under this SSM path (e.g. /a1111-async/prod/DATABASE_URL)
    config_secret_id: str = ""  # a Secrets Manager secret whose JSON keys are settings
    image_url_expiry_seconds: float = pydantic.Field(3600.0, gt=0, le=7 * 24 * 3600)
    max_response_bytes: int = pydantic.Field(6_000_000, gt=0)  # AWS Lambda answers at most 6 MB
    submissions_owner: str = pydantic.Field("sqs", min_length=1)
    lambda_time_reserve_seconds: float = pydantic.Field(20.0, ge=0)
    lambda_min_generation_seconds: float = pydantic.Field(30.0, ge=0)

    # Batches (docs/batches.md)
    batch_max_jobs: int = pydantic.Field(5000, ge=1)

    # Security: what reaches A1111 and what the server accepts (docs/security.md)
    a1111_allow_save: bool = False
    a1111_allowed_overrides: str = ",".join(DEFAULT_ALLOWED_OVERRIDES)
    a1111_allowed_scripts: str = ""
    a1111_allowed_alwayson_scripts: str = DEFAULT_ALLOWED_ALWAYSON_SCRIPTS
    a1111_extra_fields: str = ""
    health_cache_seconds: float = pydantic.Field(5.0, ge=0)
    api_threads: int = pydantic.Field(128, ge=1, le=1024)
    api_connection_limit: int = pydantic.Field(1000, ge=1)
    api_channel_timeout: float = pydantic.Field(30.0, gt=0)

    # A1111 failures (docs/reliability.md): an instance whose progress polls fail this long while it
    # runs a job is taken as stalled (0: never); the run is abandoned and the job retried elsewhere.
    a1111_stall_seconds: float = pydantic.Field(60.0, ge=0)

    # Submit durability (docs/reliability.md, "Durability"): SQLite's fsync policy. NORMAL (WAL)
    # survives any crash of the process; FULL also survives a power cut, at one fsync per commit.
    sqlite_synchronous: typing.Literal["NORMAL", "FULL"] = "NORMAL"

    # Live progress (docs/live.md): event streams, long-polls and the change signal they wait on.
    # Streams and long-polls hold a server thread each: at most STREAM_MAX_OPEN at once (default:
    # half of API_THREADS), so the other half keeps answering everything else.
    stream_max_open: int | None = pydantic.Field(None, ge=0)
    stream_keepalive_seconds: float = pydantic.Field(15.0, gt=0)
    long_poll_max_seconds: float = pydantic.Field(20.0, ge=0, le=28)
    change_watch_interval: float = pydantic.Field(0.01, gt=0, le=1)

    # Retention, per-owner limits and roles (docs/reliability.md, docs/security.md)
    job_retention: str = "30d"  # finished jobs older than this are purged; 0 keeps them forever
    retention_interval: float = pydantic.Field(300.0, gt=0)  # seconds between the sweep's purges
    max_queued_per_owner: int = pydantic.Field(0, ge=0)  # queued + processing per owner; 0: no limit
    submits_per_minute_per_owner: int = pydantic.Field(0, ge=0)  # 0: no limit
    api_admin_tokens: str = ""  # token names (owners) that may see and cancel every owner's jobs

    # Blocking requests (docs/a1111-clients.md): the /a1111 mount and `Prefer: wait` hold a server
    # thread each while their job runs; at most SYNC_MAX_WAITING at once (default: 3/8 of
    # API_THREADS), each for at most SYNC_WAIT_MAX_SECONDS (on AWS Lambda at most 25: API Gateway
    # answers within 29 s).
    sync_wait_max_seconds: float = pydantic.Field(600.0, ge=0)
    sync_max_waiting: int | None = pydantic.Field(None, ge=0)

    log_level: str = "INFO"

    # The original proxy's names and browser access (docs/legacy.md): AUTH_TOKEN is used when
    # API_TOKENS is unset, AUTOMATIC1111_API_BASE when A1111_BASE_URL is; CORS_ORIGINS `*` or a list.
    auth_token: pydantic.SecretStr = pydantic.SecretStr("")
    automatic1111_api_base: str = ""
    cors_origins: str = ""

    @pydantic.field_validator("api_tokens")
    @classmethod
    def _check_api_tokens(cls, value: str) -> str:
        """An empty entry would be an empty token, or `alice:` a token spelled "alice:": refuse both."""
        if value == "":
            return value  # not set: every protected route answers 401 saying so
        items = value.split(",")
        for number, item in enumerate(items, start=1):
            name, sep, token = item.strip().partition(":")
            if not item.strip():
                raise ValueError(f"entry {number} of {len(items)} is empty (entries are separated by "
                                 "commas: name:token,other:token2)")
            if sep and not token.strip():
                raise ValueError(f"entry {number} of {len(items)} has an empty token after ':' "
                                 "(write name:token)")
            if sep and not name.strip():
                raise ValueError(f"entry {number} of {len(items)} has an empty name before ':' "
                                 "(write name:token, or the token alone)")
            secret = item.strip() if item.strip().startswith(HASH_PREFIX) else token.strip()
            if secret.startswith(HASH_PREFIX) and not HASHED_TOKEN.fullmatch(secret):
                raise ValueError(f"entry {number} of {len(items)} starts like a hashed token but is not "
                                 f"{HASH_PREFIX}<64 hex digits> (the sha256 of the token)")
        return value

    @pydantic.model_validator(mode="after")
    def _use_legacy_names(self) -> "Settings":
        """The original proxy's AUTOMATIC1111_API_BASE stands in for an unset A1111_BASE_URL (its
        AUTH_TOKEN is read by `token_map`); each use is logged once per process."""
        if self.automatic1111_api_base.strip() and "a1111_base_url" not in self.model_fields_set:
            self.a1111_base_url = self.automatic1111_api_base.strip()
            _prefer_once("AUTOMATIC1111_API_BASE", "A1111_BASE_URL")
        if self.auth_token.get_secret_value().strip() and not self.api_tokens.strip():
            _prefer_once("AUTH_TOKEN", "API_TOKENS")
        return self

    def token_map(self) -> dict[str, str]:
        """`API_TOKENS` (else the one AUTH_TOKEN) as {token: owner name}.

        `name:token` names its owner; a bare token is owned by `tok-<first 12 hex of its sha256>`,
        a name that is stable when the list is reordered and reveals nothing of the token. A hashed
        entry's key is its `sha256:<hex>` (see `token_digests`).
        """
        return _token_map(self.api_tokens, self.auth_token.get_secret_value())

    def token_digests(self) -> tuple[tuple[bytes, str], ...]:
        """`API_TOKENS` as (sha256 digest of the token, owner name): a hashed entry
        (`name:sha256:<64 hex>`) as given, a plaintext one hashed here, so a presented token is
        hashed once and compared in constant time with every entry alike. Every request asks: the
        list is built once per distinct value of the two settings."""
        return _token_digests(self.api_tokens, self.auth_token.get_secret_value())

    @pydantic.field_validator("image_store")
    @classmethod
    def _check_image_store(cls, value: str) -> str:
        """Refused at start-up, not at every request that would build the image store."""
        if value != "db" and not (value.startswith("s3://") and value[len("s3://"):].strip("/")):
            raise ValueError(f"IMAGE_STORE is db (images in the job database) or s3://bucket/prefix, not {value!r}")
        return value

    @pydantic.field_validator("job_retention")
    @classmethod
    def _check_job_retention(cls, value: str) -> str:
        if len(parse_durations(value)) != 1:
            raise ValueError("JOB_RETENTION is one duration: 30d, 12h, 10s, or 0 to keep jobs forever")
        return value

    def job_retention_seconds(self) -> float | None:
        """JOB_RETENTION in seconds, or None: keep finished jobs forever."""
        return parse_durations(self.job_retention)[0] or None

    def admin_names(self) -> frozenset[str]:
        """API_ADMIN_TOKENS: the owner names whose tokens are admin tokens."""
        return parse_names(self.api_admin_tokens)

    @pydantic.field_validator("webhook_retry_schedule")
    @classmethod
    def _check_retry_schedule(cls, value: str) -> str:
        parse_durations(value)
        return value

    @pydantic.model_validator(mode="after")
    def _check_webhook_claim(self) -> "Settings":
        """A claim that ran out mid-attempt would let a second dispatcher send the same delivery."""
        least = self.webhook_timeout + WEBHOOK_CLAIM_MARGIN_SECONDS
        if self.webhook_claim_seconds < least:
            raise ValueError(f"WEBHOOK_CLAIM_SECONDS ({self.webhook_claim_seconds:g}) must be at least "
                             f"WEBHOOK_TIMEOUT + {WEBHOOK_CLAIM_MARGIN_SECONDS:g} s ({least:g}), so that no "
                             "other dispatcher takes a delivery while its attempt is open")
        return self

    def stream_limit(self) -> int:
        """How many event streams and long-polls may be open at once in one API process."""
        return self.api_threads // 2 if self.stream_max_open is None else self.stream_max_open

    @pydantic.model_validator(mode="after")
    def _check_stream_limit(self) -> "Settings":
        """Streams that could hold every server thread would leave none for anything else."""
        if self.stream_max_open is not None and self.stream_max_open >= self.api_threads:
            raise ValueError(f"STREAM_MAX_OPEN ({self.stream_max_open}) must be less than API_THREADS "
                             f"({self.api_threads}): each open stream holds a server thread")
        return self

    def sync_wait_limit(self) -> float:
        """The longest a blocking request waits; below API Gateway's 29 s on AWS Lambda."""
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            return min(self.sync_wait_max_seconds, LAMBDA_SYNC_WAIT_SECONDS)
        return self.sync_wait_max_seconds

    def sync_waiting_limit(self) -> int:
        """How many blocking requests may wait at once in one API process."""
        return self.api_threads * 3 // 8 if self.sync_max_waiting is None else self.sync_max_waiting

    @pydantic.model_validator(mode="after")
    def _check_sync_limit(self) -> "Settings":
        """Waiting requests that could hold every server thread would leave none for anything else."""
        if self.sync_max_waiting is not None and self.sync_max_waiting >= self.api_threads:
            raise ValueError(f"SYNC_MAX_WAITING ({self.sync_max_waiting}) must be less than API_THREADS "
                             f"({self.api_threads}): each waiting request holds a server thread")
        return self

    def webhook_retry_delays(self) -> list[float]:
        """WEBHOOK_RETRY_SCHEDULE in seconds: the wait before retry 1, 2, ..."""
        return parse_durations(self.webhook_retry_schedule)


_preferred_logged: set[str] = set()


def _prefer_once(old: str, new: str) -> None:
    if old not in _preferred_logged:
        _preferred_logged.add(old)
        log.warning("%s is the original proxy's name for %s; it is used because %s is unset, but %s is "
                    "preferred", old, new, new, new, extra={"setting": old, "preferred": new})


def cors_origins(settings: Settings) -> tuple[str, ...]:
    """CORS_ORIGINS as origins: ("*",) for any origin, () when CORS is off."""
    origins = tuple(part.strip().rstrip("/") for part in settings.cors_origins.split(",") if part.strip())
    return ("*",) if "*" in origins else origins

HASH_PREFIX = "sha256:"
HASHED_TOKEN = re.compile(r"sha256:[0-9a-fA-F]{64}")


def _is_bare_hash(item: str) -> bool:
    """`sha256:<64 hex>` alone is a hashed token without a name, not the token `<hex>` named sha256."""
    return HASHED_TOKEN.fullmatch(item) is not None


def parse_names(text: str) -> frozenset[str]:
    """A comma-separated list of names (settings such as A1111_ALLOWED_SCRIPTS) as a set."""
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _environment_values() -> dict[str, str]:
    """The environment's value of each setting, by its lowercased name."""
    fields = Settings.model_fields
    return {name.lower(): value for name, value in os.environ.items() if name.lower() in fields}


def _aws_values() -> dict[str, str]:
    """Settings from SSM Parameter Store (CONFIG_SSM_PATH), over Secrets Manager (CONFIG_SECRET_ID),
    as raw strings (validated with the environment's); nothing, and no import, when neither is set."""
    ssm_path, secret_id = os.environ.get("CONFIG_SSM_PATH"), os.environ.get("CONFIG_SECRET_ID")
    if not ssm_path and not secret_id:
        return {}
    import pydantic_settings  # noqa: PLC0415 - it imports asyncio: only when an AWS source is named

    raw = pydantic.create_model("RawSettings", __base__=pydantic_settings.BaseSettings,
                                **{name: (str | None, None) for name in Settings.model_fields})
    sources = []
    if secret_id:
        sources.append(pydantic_settings.AWSSecretsManagerSettingsSource(raw, secret_id=secret_id,
                                                                         case_sensitive=False))
    if ssm_path:
        sources.append(pydantic_settings.AWSSystemsManagerSettingsSource(raw, ssm_path=ssm_path,
                                                                         case_sensitive=False))
    values: dict[str, str] = {}
    for source in sources:
        values.update({name: value for name, value in source().items() if value is not None})
    return values


def _token_map(api_tokens: str, auth_token: str) -> dict[str, str]:
    legacy = auth_token.strip()
    if not api_tokens.strip() and legacy:
        return {legacy: "tok-" + hashlib.sha256(legacy.encode()).hexdigest()[:12]}
    tokens: dict[str, str] = {}
    for item in (part.strip() for part in api_tokens.split(",")):
        if not item:
            continue
        name, sep, token = item.partition(":")
        if _is_bare_hash(item):
            tokens[item] = "tok-" + item[len(HASH_PREFIX):][:12].lower()
        elif sep and token and name:
            tokens[token] = name
        else:
            tokens[item] = "tok-" + hashlib.sha256(item.encode()).hexdigest()[:12]
    return tokens


@functools.lru_cache(maxsize=8)
def _token_digests(api_tokens: str, auth_token: str) -> tuple[tuple[bytes, str], ...]:
    return tuple((bytes.fromhex(token[len(HASH_PREFIX):]) if HASHED_TOKEN.fullmatch(token)
                  else hashlib.sha256(token.encode()).digest(), owner)
                 for token, owner in _token_map(api_tokens, auth_token).items())


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing the env."""
    return Settings()


DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_durations(text: str) -> list[float]:
    """`5s,30s,2m,1h,1d` (or bare seconds, `0.5`) as seconds; an empty string is no retries."""
    delays = []
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        unit = next((u for u in DURATION_UNITS if item.endswith(u)), "")
        number = item[:-len(unit)] if unit else item
        try:
            seconds = float(number) * DURATION_UNITS.get(unit, 1.0)
        except ValueError:
            raise ValueError(f"{item!r} is not a duration (examples: 5s, 2m, 1h, 0.5)") from None
        if not 0 <= seconds < float("inf"):
            raise ValueError(f"{item!r} must be a finite duration >= 0")
        delays.append(seconds)
    return delays
