"""What of a client's body may reach the A1111 instances, which every tenant shares.

Generation-only by default (docs/security.md has the table): nothing is saved on A1111's disk, no
option of A1111 changes for longer than the job, no script runs and no URL is fetched unless the
operator allows it, and fields A1111 does not define are not forwarded. A refused field is a 422
naming it; a dropped one is recorded with the job.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import typing

from chalicelib import config
from chalicelib import strict_json

ANY = "*"  # in an allow-list: every name (for an instance that serves a single tenant)
IMAGE_FIELDS = ("init_images", "mask", "latent_mask", "firstpass_image")  # A1111 decodes these as images
SCRIPT_FIELDS = ("script_args", "alwayson_scripts")
MAX_DROPPED_NAMES = 100
MAX_NAME_SHOWN = 80
# A1111 (modules/api/api.py decode_base64_to_image) fetches a string that starts with http:// or https://
# and strips a `data:image/...;base64,` prefix; anything else it decodes as base64.
_BASE64_IMAGE = re.compile(r"(?:data:[^,]{0,256},)?[A-Za-z0-9+/_\-\s]+={0,2}")
_URL_PREFIXES = ("http://", "https://")


@dataclasses.dataclass(frozen=True)
class Policy:
    """The allow-lists from the settings; script names are kept lower-case, as A1111 compares them."""

    allow_save: bool = False
    allowed_overrides: frozenset[str] = frozenset(config.DEFAULT_ALLOWED_OVERRIDES)
    allowed_scripts: frozenset[str] = frozenset()
    allowed_alwayson_scripts: frozenset[str] = frozenset(
        name.lower() for name in config.parse_names(config.DEFAULT_ALLOWED_ALWAYSON_SCRIPTS))
    extra_fields: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: config.Settings) -> "Policy":
        """Parsed once per distinct set of values (every submit asks, twice)."""
        return _parsed(settings.a1111_allow_save, settings.a1111_allowed_overrides, settings.a1111_allowed_scripts,
                       settings.a1111_allowed_alwayson_scripts, settings.a1111_extra_fields)

    def allows_override(self, key: str) -> bool:
        return ANY in self.allowed_overrides or key in self.allowed_overrides

    def allows_script(self, name: str) -> bool:
        return ANY in self.allowed_scripts or name.lower() in self.allowed_scripts

    def allows_alwayson_script(self, name: str) -> bool:
        return ANY in self.allowed_alwayson_scripts or name.lower() in self.allowed_alwayson_scripts

    def forwards_extra(self, name: str) -> bool:
        return ANY in self.extra_fields or name in self.extra_fields


@functools.lru_cache(maxsize=8)
def _parsed(allow_save: bool, overrides: str, scripts: str, alwayson_scripts: str, extra_fields: str) -> Policy:
    return Policy(
        allow_save=allow_save,
        allowed_overrides=config.parse_names(overrides),
        allowed_scripts=frozenset(n.lower() for n in config.parse_names(scripts)),
        allowed_alwayson_scripts=frozenset(n.lower() for n in config.parse_names(alwayson_scripts)),
        extra_fields=config.parse_names(extra_fields),
    )


DEFAULT = Policy()  # the documented defaults, as a fresh deployment has them

def split_fields(body: dict, *, known: typing.Container[str], policy: Policy) -> tuple[dict, list[str]]:
    """(the fields A1111 defines or the operator lists in A1111_EXTRA_FIELDS, the names of the others).

    A1111 ignores fields it does not define, so dropping them changes nothing there; forwarding them
    would let a fork's or extension's field through ungoverned.
    """
    kept = {k: v for k, v in body.items() if k in known or policy.forwards_extra(k)}
    if len(kept) == len(body):
        return kept, []
    dropped = sorted(_shown(k) for k in body if k not in kept)
    return kept, dropped[:MAX_DROPPED_NAMES]


def problems(request: dict, *, policy: Policy) -> list[dict]:
    """Every governed field of `request` (the fields the client set, validated) that is refused."""
    found: list[dict] = []

    def refuse(loc: list, msg: str, type_: str = "not_allowed") -> None:
        found.append({"loc": ["body", *loc], "msg": msg, "type": type_})

    for key in request.get("override_settings") or {}:
        if not policy.allows_override(key):
            refuse(["override_settings", _shown(key)],
                   f"the A1111 option {_shown(key)!r} may not be set by a job: only generation options "
                   "listed in A1111_ALLOWED_OVERRIDES may (other options change A1111 for every tenant)")
    if request.get("override_settings_restore_afterwards") is False:
        refuse(["override_settings_restore_afterwards"],
               "must be true: A1111 restores the job's override_settings after it, so that they never "
               "change A1111 for other tenants' jobs")
    script_name = request.get("script_name")
    if script_name and not policy.allows_script(script_name):
        refuse(["script_name"], f"the script {_shown(script_name)!r} is not allowed; scripts run with A1111's "
                                "powers (files, settings), so only those in A1111_ALLOWED_SCRIPTS may run")
    elif not script_name and request.get("script_args"):
        refuse(["script_args"], "script_args need a script_name (A1111 ignores them without one)")
    for name in request.get("alwayson_scripts") or {}:
        if not policy.allows_alwayson_script(name):
            refuse(["alwayson_scripts", _shown(name)],
                   f"the always-on script {_shown(name)!r} is not allowed; only those in "
                   "A1111_ALLOWED_ALWAYSON_SCRIPTS may get arguments")
    for field in SCRIPT_FIELDS:
        for loc in _url_paths(request.get(field)):
            refuse([field, *loc], "a URL may not reach A1111 (it would fetch it): send the image as base64",
                   "url_not_allowed")
    for field in IMAGE_FIELDS:
        values = request.get(field)
        items = enumerate(values) if isinstance(values, list) else [(None, values)]
        for index, value in items:
            loc = [field] if index is None else [field, index]
            if value is not None and not _is_base64_image(value):
                refuse(loc, "must be a base64 image (a data: URI prefix is allowed), never a URL: "
                            "A1111 would fetch it", "base64_image")
    for loc in strict_json.non_finite_paths(request):
        refuse(loc, "must be a finite number (NaN and Infinity are not JSON)", "finite_number")
    return found


def enforce(payload: dict, *, policy: Policy) -> dict:
    """`payload` with the forced values: A1111 saves nothing and restores its options after the job."""
    forced = {"override_settings_restore_afterwards": True}
    if not policy.allow_save:
        forced.update(save_images=False, do_not_save_samples=True, do_not_save_grid=True)
    return {**payload, **forced}


def _is_base64_image(value: object) -> bool:
    return isinstance(value, str) and _BASE64_IMAGE.fullmatch(value) is not None


def _url_paths(value: object) -> list[list]:
    """Where strings that A1111 would fetch as URLs sit inside `value`."""
    return strict_json.paths_where(value, _is_url)


def _is_url(item: object) -> bool:
    """A string A1111 would fetch. Only its first characters are lower-cased: a script argument may be a
    base64 image of megabytes, and lowering one character never makes fewer characters."""
    return isinstance(item, str) and item.lstrip()[:len("https://")].lower().startswith(_URL_PREFIXES)


def _shown(name: str) -> str:
    """A client's name as it may appear in a message or a job: bounded."""
    return name if len(name) <= MAX_NAME_SHOWN else name[:MAX_NAME_SHOWN] + "…"
