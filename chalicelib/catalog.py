"""Checkpoints and LoRAs of every A1111 instance, and A1111's read-only discovery lists.

A client picking a model sees one list: the lists of all instances merged (`instances` says which
have an item), in A1111's shapes with A1111's keys intact, plus a `civitai` key when enrichment is
on. Every answer A1111 gives is kept in the cache port: an answer younger than CATALOG_TTL is served
from there, and when an instance does not answer its last answer is served, marked `stale`, so these
endpoints keep working while A1111 is down or busy restarting. `refresh` skips the fresh cache (for
A1111 and Civitai alike), never the stale fallback.

Civitai enrichment waits at most CIVITAI_BUDGET seconds: lookups still running then finish in the
background and are cached for the next request; meanwhile those items say `"status": "unavailable"`.
Cache failures are logged and never fail a request (the lists are still fetched live).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import re
import time
import typing
import weakref

from chalicelib import a1111
from chalicelib import civitai
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import store
from chalicelib import views
from chalicelib.store import cache as cache_port

log = logging.getLogger(__name__)

SD_MODELS, LORAS = "sd-models", "loras"
LIST_PATHS = {SD_MODELS: "/sdapi/v1/sd-models", LORAS: "/sdapi/v1/loras"}
NOUNS = {SD_MODELS: "checkpoint", LORAS: "LoRA"}
# Fields taken from the instance that knows the file's hash when two instances list the same file.
HASH_FIELDS = {SD_MODELS: ("title", "hash", "sha256"), LORAS: ("metadata",)}
PASSTHROUGH_PATHS = frozenset({
    "/sdapi/v1/samplers", "/sdapi/v1/schedulers", "/sdapi/v1/sd-vae", "/sdapi/v1/upscalers",
    "/sdapi/v1/scripts", "/sdapi/v1/options", "/sdapi/v1/embeddings",
})
LIST_NAMESPACE = "a1111"
CIVITAI_NAMESPACE = "civitai"
FOUND, NOT_FOUND, NO_HASH, UNAVAILABLE = "found", "not_found", "no_hash", "unavailable"
COMPLETE, PARTIAL, DISABLED = "complete", "partial", "disabled"
_HASH_SUFFIX = re.compile(r"\s\[[0-9a-fA-F]{8,64}\]$")
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off", ""}
_SUMMARY_DEFAULTS = {
    "model_id": None, "model_name": None, "version_id": None, "version_name": None, "type": None,
    "base_model": None, "trained_words": [], "nsfw": None, "nsfw_level": None, "air": None,
    "page_url": None, "download_url": None, "preview_images": [],
}


@dataclasses.dataclass(frozen=True)
class Answer:
    """What one instance said to one GET, now or (stale) the last time it answered."""

    instance: str
    body: object = None
    stored_at: float | None = None  # when A1111 gave `body`; None: no body at all
    stale: bool = False  # A1111 did not answer now: `body` is its last answer
    problem: str | None = None  # why A1111 did not answer now


@dataclasses.dataclass
class Listing:
    """A merged list and how complete it is."""

    items: list[dict]
    stale: bool  # at least one instance did not answer: its part is its last answer
    enrichment: str  # complete | partial (Civitai did not answer every lookup in time) | disabled


def parse_refresh(value: str | None) -> bool:
    """`?refresh=`: true/false (also 1/0, yes/no); anything else is a 422."""
    if value is None or value.strip().lower() in _FALSE:
        return False
    if value.strip().lower() in _TRUE:
        return True
    raise errors.ValidationFailed.single(["query", "refresh"], f"refresh must be true or false, not {value!r}",
                                         "type_error.bool")


# --- Use cases -----------------------------------------------------------------------------------

def list_items(ctx: context_module.Context, kind: str, *, refresh: bool = False) -> Listing:
    """Every checkpoint (or LoRA) of every instance, merged, enriched when CIVITAI_ENABLED."""
    cache = store.make_cache(ctx.store)
    items, stale = gather(ctx, kind, refresh=refresh, cache=cache)
    enrichment = enrich(ctx, items, refresh=refresh, cache=cache)
    return Listing(items=items, stale=stale, enrichment=enrichment)


def get_item(ctx: context_module.Context, kind: str, name: str, *, refresh: bool = False) -> Listing:
    """The one checkpoint (or LoRA) that `name` names: title, model_name, alias or hash (404 if none)."""
    cache = store.make_cache(ctx.store)
    items, _ = gather(ctx, kind, refresh=refresh, cache=cache)
    item = find(kind, items, name)
    if item is None:
        raise errors.NotFound(f"no {NOUNS[kind]} named {name!r} on any A1111 instance (match a title, "
                              f"model_name, name, alias or hash; GET {LIST_PATHS[kind]} lists them)")
    enrichment = enrich(ctx, [item], refresh=refresh, cache=cache)
    return Listing(items=[item], stale=item["stale"], enrichment=enrichment)


def passthrough(ctx: context_module.Context, path: str, *, refresh: bool = False) -> Answer:
    """A1111's answer to a read-only GET, from the first instance that answers (in A1111_BASE_URL
    order); else the first one's last answer, stale; else 502."""
    if path not in PASSTHROUGH_PATHS:
        raise ValueError(f"{path} is not a discovery endpoint")
    cache = store.make_cache(ctx.store)
    fallback: Answer | None = None
    problems = []
    for instance in ctx.instances:
        (answer,) = fetch_answers(ctx, path, [instance], refresh=refresh, cache=cache)
        if answer.stored_at is not None and not answer.stale:
            return answer
        fallback = fallback or (answer if answer.stored_at is not None else None)
        problems.append(answer.problem)
    if fallback is not None:
        return fallback
    raise errors.BadGateway(f"no A1111 instance answered GET {path}: " + "; ".join(problems))


# --- Gathering -----------------------------------------------------------------------------------

def gather(ctx: context_module.Context, kind: str, *, refresh: bool,
           cache: cache_port.Cache) -> tuple[list[dict], bool]:
    """(merged items, whether any instance's part is stale); 502 if no instance has a list at all."""
    answers = fetch_answers(ctx, LIST_PATHS[kind], ctx.instances, refresh=refresh, cache=cache)
    usable = [answer for answer in answers if answer.stored_at is not None]
    if not usable:
        raise errors.BadGateway(f"no A1111 instance answered GET {LIST_PATHS[kind]} and none has answered "
                                "before: " + "; ".join(answer.problem or "" for answer in answers))
    return merge(kind, usable), any(answer.stale for answer in usable)


def fetch_answers(ctx: context_module.Context, path: str, instances: typing.Sequence[a1111.Instance], *,
                  refresh: bool, cache: cache_port.Cache) -> list[Answer]:
    """Each instance's answer to GET `path`: cached if younger than CATALOG_TTL (unless `refresh`),
    else live (instances called in parallel), else its last answer (stale), else none."""
    now = time.time()
    keys = [_list_key(instance, path) for instance in instances]
    stored = _cache_get_many(cache, LIST_NAMESPACE, keys)
    answers: dict[str, Answer] = {}
    live: list[a1111.Instance] = []
    for instance, key in zip(instances, keys, strict=True):
        entry = stored.get(key)
        if entry is not None and not refresh and entry.age(now=now) < ctx.settings.catalog_ttl:
            answers[instance.name] = Answer(instance.name, entry.value, entry.stored_at)
        else:
            live.append(instance)
    if len(live) == 1:
        outcomes = [_call(ctx, live[0], path)]
    elif live:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(live)) as pool:
            outcomes = list(pool.map(lambda instance: _call(ctx, instance, path), live))
    else:
        outcomes = []
    for instance, (body, problem) in zip(live, outcomes, strict=True):
        entry = stored.get(_list_key(instance, path))
        if problem is None:
            answered_at = time.time()
            _cache_put(cache, LIST_NAMESPACE, _list_key(instance, path), body, now=answered_at)
            answers[instance.name] = Answer(instance.name, body, answered_at)
        elif entry is not None:
            answers[instance.name] = Answer(instance.name, entry.value, entry.stored_at, stale=True, problem=problem)
        else:
            answers[instance.name] = Answer(instance.name, problem=problem)
    return [answers[instance.name] for instance in instances]


def _call(ctx: context_module.Context, instance: a1111.Instance, path: str) -> tuple[object, str | None]:
    """(A1111's JSON, None) or (None, why not); messages never carry credentials."""
    settings = ctx.settings
    client = a1111.make_client(instance, settings, timeout=settings.catalog_timeout)
    try:
        return client.get_json(path, timeout=settings.catalog_timeout), None
    except errors.A1111Error as exc:
        log.warning("A1111 did not answer a discovery call", extra={"instance": instance.name, "path": path,
                                                                     "reason": exc.message})
        return None, exc.message
    finally:
        client.close()


def merge(kind: str, answers: typing.Sequence[Answer]) -> list[dict]:
    """One item per file: the same name with no conflicting hash on several instances is one item
    listing them all (the hashed copy's title and hashes win: A1111 hashes a checkpoint only once
    it was loaded there)."""
    merged: list[dict] = []
    fingerprints: list[str | None] = []
    by_name: dict[str, list[int]] = {}
    for answer in answers:
        for raw in answer.body if isinstance(answer.body, list) else []:
            if not _valid(kind, raw):
                continue
            name, fingerprint = _name_key(kind, raw), _fingerprint(raw)
            index = next((i for i in by_name.get(name, []) if _same_file(fingerprints[i], fingerprint)), None)
            if index is None:
                by_name.setdefault(name, []).append(len(merged))
                merged.append({**raw, "instances": [answer.instance], "stale": answer.stale})
                fingerprints.append(fingerprint)
                continue
            item = merged[index]
            if answer.instance not in item["instances"]:
                item["instances"].append(answer.instance)
            item["stale"] = item["stale"] and answer.stale
            if fingerprint and len(fingerprint) > len(fingerprints[index] or ""):
                item.update({field: raw[field] for field in HASH_FIELDS[kind] if field in raw})
                fingerprints[index] = fingerprint
    return merged


def _valid(kind: str, item: object) -> bool:
    if not isinstance(item, dict):
        return False
    if kind == SD_MODELS:
        return isinstance(item.get("title"), str) and isinstance(item.get("model_name"), str)
    return isinstance(item.get("name"), str)


def _name_key(kind: str, item: dict) -> str:
    """The file's name without A1111's ` [shorthash]` (which only some instances may show yet)."""
    return _HASH_SUFFIX.sub("", item["title"]) if kind == SD_MODELS else item["name"]


def _fingerprint(item: dict) -> str | None:
    """The longest hash A1111 shows for the file (lower-case), if any."""
    metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    for value in (item.get("sha256"), metadata.get("sshs_model_hash"), item.get("hash")):
        if isinstance(value, str) and value:
            return value.lower()
    return None


def _same_file(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a.startswith(b) or b.startswith(a)


# --- Matching {name} -----------------------------------------------------------------------------

def find(kind: str, items: typing.Sequence[dict], name: str) -> dict | None:
    """The first item whose title, name, model_name or alias is `name`; else whose hash is (any case:
    a checkpoint's AutoV2 or sha256, a LoRA's sshs_model_hash or its 12-hex AutoV3 prefix)."""
    for item in items:
        if kind == SD_MODELS:
            names = (item.get("title"), _name_key(kind, item), item.get("model_name"))
        else:
            names = (item.get("name"), item.get("alias"))
        if name in names:
            return item
    needle = name.strip().lower()
    for item in items:
        if needle and needle in _hashes(kind, item):
            return item
    return None


def _hashes(kind: str, item: dict) -> set[str]:
    if kind == SD_MODELS:
        found = {v.lower() for v in (item.get("hash"), item.get("sha256")) if isinstance(v, str) and v}
        return found | {v[:10] for v in found if len(v) == 64}
    metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    value = metadata.get("sshs_model_hash")
    return {value.lower(), value.lower()[:12]} if isinstance(value, str) and value else set()


# --- Civitai enrichment --------------------------------------------------------------------------

def lookup_hash(item: dict) -> civitai.HashRef | None:
    """The best hash to ask Civitai about: the file's SHA256, else a LoRA's AutoV3 (the first 12 hex
    of kohya's `sshs_model_hash`), else A1111's short hash (AutoV2, or AutoV3 if 12 hex long)."""
    metadata = item.get("metadata") if isinstance(item.get("metadata"), dict) else {}
    short = item.get("hash") if isinstance(item.get("hash"), str) else ""
    short_kind = civitai.AUTOV3 if len(short) == 12 else civitai.AUTOV2
    return (civitai.hash_ref(civitai.SHA256, item.get("sha256"))
            or civitai.hash_ref(civitai.AUTOV3, metadata.get("sshs_model_hash"))
            or civitai.hash_ref(short_kind, short))


def enrich(ctx: context_module.Context, items: list[dict], *, refresh: bool, cache: cache_port.Cache) -> str:
    """Add each item's `civitai` key (in place); complete, partial or disabled."""
    settings = ctx.settings
    if not settings.civitai_enabled:
        return DISABLED
    refs = [lookup_hash(item) for item in items]
    stored = _cache_get_many(cache, CIVITAI_NAMESPACE, [ref.key for ref in refs if ref])
    now = time.time()
    current = {key: entry.value for key, entry in stored.items() if not refresh and _fresh(ctx, entry, now=now)}
    wanted = [ref for ref in dict.fromkeys(refs) if ref is not None and ref.key not in current]
    if wanted:
        current.update(_look_up(ctx, wanted, cache=cache))
    complete = True
    for item, ref in zip(items, refs, strict=True):
        if ref is None:
            item["civitai"] = _civitai_value(NO_HASH)
            continue
        value = current.get(ref.key)
        if value is None:
            complete = False
            value = stored[ref.key].value if ref.key in stored else _civitai_value(UNAVAILABLE, ref=ref)
        item["civitai"] = dict(value)
    return COMPLETE if complete else PARTIAL


def _look_up(ctx: context_module.Context, refs: list[civitai.HashRef], *, cache: cache_port.Cache) -> dict[str, dict]:
    """Civitai's answers that arrive within CIVITAI_BUDGET, by ref key (each is cached as it arrives)."""
    settings = ctx.settings
    site = civitai.site_url(settings.civitai_base_url)
    pool = civitai.shared_pool(settings.civitai_base_url, api_key=settings.civitai_api_key.get_secret_value(),
                               timeout=settings.civitai_timeout, concurrency=settings.civitai_concurrency)

    def on_result(ref: civitai.HashRef, version: dict | None) -> dict:
        answered_at = time.time()
        if version is None:
            value = _civitai_value(NOT_FOUND, ref=ref, fetched_at=answered_at)
        else:
            value = _civitai_value(FOUND, ref=ref, fetched_at=answered_at,
                                   summary=civitai.summarize(version, site_url=site))
        _cache_put(cache, CIVITAI_NAMESPACE, ref.key, value, now=answered_at)
        return value

    futures = pool.submit(refs, on_result=on_result)
    concurrent.futures.wait(list(futures.values()), timeout=settings.civitai_budget)
    return {key: future.result() for key, future in futures.items()
            if future.done() and future.exception() is None}


def _civitai_value(status: str, *, ref: civitai.HashRef | None = None, fetched_at: float | None = None,
                   summary: dict | None = None) -> dict:
    return {"status": status, "hash": ref.value if ref else None, "hash_type": ref.kind if ref else None,
            "fetched_at": views.iso(fetched_at), **_SUMMARY_DEFAULTS, **(summary or {})}


def _fresh(ctx: context_module.Context, entry: cache_port.CacheEntry, *, now: float) -> bool:
    found = isinstance(entry.value, dict) and entry.value.get("status") == FOUND
    ttl = ctx.settings.civitai_cache_ttl if found else ctx.settings.civitai_not_found_ttl
    return entry.age(now=now) < ttl


# --- The cache, never fatal ----------------------------------------------------------------------

def _list_key(instance: a1111.Instance, path: str) -> str:
    return f"{instance.name} {path}"


def _cache_get_many(cache: cache_port.Cache, namespace: str, keys: list[str]) -> dict[str, cache_port.CacheEntry]:
    try:
        return cache.get_many(namespace, keys) if keys else {}
    except errors.StoreUnavailable:
        log.warning("the catalog cache cannot be read; answering without it", exc_info=True)
        return {}


def _cache_put(cache: cache_port.Cache, namespace: str, key: str, value: object, *, now: float) -> None:
    try:
        cache.put(namespace, key, value, now=now)
    except errors.StoreUnavailable:
        log.warning("the catalog cache cannot be written", exc_info=True)


# --- Sampler and scheduler names at submit -------------------------------------------------------

SAMPLERS_PATH, SCHEDULERS_PATH = "/sdapi/v1/samplers", "/sdapi/v1/schedulers"


@dataclasses.dataclass(frozen=True)
class SamplerNames:
    """The names A1111 resolves, from the lists of every instance, and until when they are fresh."""

    samplers: frozenset[str]  # a sampler's `name`, alone or followed by a scheduler's (as "DPM++ 2M Karras")
    schedulers: frozenset[str]  # a scheduler's `name` or `label`
    listed_samplers: tuple[str, ...]  # what a 422 lists as valid
    fresh_until: float  # the oldest list's time plus CATALOG_TTL, as the cache itself would serve it
    store: weakref.ref  # the store the lists were read from (a rebuilt context starts over)
    instances: tuple[str, ...]


_names: SamplerNames | None = None  # this process's copy (replaced whole, so threads need no lock)
# When no instance had lists: (store ref, instances, until). Submits meanwhile go unchecked without
# asking A1111 again, so an outage never makes every submit wait for A1111's timeouts.
_unanswered: tuple | None = None
UNANSWERED_RETRY_SECONDS = 10.0


def check_sampler(ctx: context_module.Context, payload: dict) -> None:
    """422 when `sampler_name` or `scheduler` is a name no configured instance knows: A1111 1.10
    would silently run its first sampler (or Automatic) instead. Checked against the names A1111
    itself resolves (a sampler's `name`, optionally followed by a scheduler's label, name or alias,
    as "DPM++ 2M Karras"; a scheduler's `name` or `label`), from the cached lists, kept in this
    process while the cache would serve them as fresh (webuiapi names a sampler in every submit).
    If no instance has ever answered, the job is accepted and the log says it went unchecked."""
    sampler, scheduler = payload.get("sampler_name"), payload.get("scheduler")
    sampler = sampler if isinstance(sampler, str) and sampler else None
    scheduler = scheduler if isinstance(scheduler, str) and scheduler else None
    if sampler is None and scheduler is None:
        return
    names = sampler_names(ctx)
    if names is None:
        log.warning("sampler/scheduler not checked: no A1111 instance answered or has answered before",
                    extra={"sampler_name": sampler, "scheduler": scheduler})
        return
    problems = []
    if sampler is not None and sampler not in names.samplers:
        problems.append({"loc": ["body", "sampler_name"], "type": "value_error.sampler",
                         "msg": f"no A1111 instance has a sampler named {sampler!r} (it would silently run "
                                f"another); valid: {', '.join(names.listed_samplers)}"})
    if scheduler is not None and scheduler not in names.schedulers:
        problems.append({"loc": ["body", "scheduler"], "type": "value_error.scheduler",
                         "msg": f"no A1111 instance has a scheduler named {scheduler!r} (it would silently run "
                                f"Automatic); valid: {', '.join(sorted(names.schedulers))}"})
    if problems:
        raise errors.ValidationFailed(problems)


def sampler_names(ctx: context_module.Context) -> SamplerNames | None:
    """The valid names: this process's copy while fresh, else built from the cached (or live) lists;
    None if no instance has ever answered."""
    global _names, _unanswered
    instances = tuple(instance.name for instance in ctx.instances)
    names, unanswered, now = _names, _unanswered, time.time()
    if (names is not None and names.store() is ctx.store and names.instances == instances
            and now < names.fresh_until):
        return names
    if unanswered is not None and unanswered[0]() is ctx.store and unanswered[1] == instances and now < unanswered[2]:
        return None
    cache = store.make_cache(ctx.store)
    samplers = _reported(ctx, SAMPLERS_PATH, cache=cache)
    schedulers = _reported(ctx, SCHEDULERS_PATH, cache=cache)
    if samplers is None or schedulers is None:
        _unanswered = (weakref.ref(ctx.store), instances, time.time() + UNANSWERED_RETRY_SECONDS)
        return None
    (sampler_items, sampler_time), (scheduler_items, scheduler_time) = samplers, schedulers
    bare = {item["name"] for item in sampler_items if isinstance(item.get("name"), str)}
    scheduler_names = frozenset(value for item in scheduler_items for value in (item.get("name"), item.get("label"))
                                if isinstance(value, str))
    suffixes = scheduler_names | {alias for item in scheduler_items for alias in item.get("aliases") or []
                                  if isinstance(alias, str)}
    names = SamplerNames(samplers=frozenset(bare | {f"{name} {suffix}" for name in bare for suffix in suffixes}),
                         schedulers=scheduler_names, listed_samplers=tuple(sorted(bare)),
                         fresh_until=min(sampler_time, scheduler_time) + ctx.settings.catalog_ttl,
                         store=weakref.ref(ctx.store), instances=instances)
    _names = names
    return names


def _reported(ctx: context_module.Context, path: str, *,
              cache: cache_port.Cache) -> tuple[list[dict], float] | None:
    """Every instance's list at `path` (cached as the catalogue is, stale if need be), joined, and the
    time of the oldest answer (a stale one counts as old as it is); None if no instance has one."""
    answers = fetch_answers(ctx, path, ctx.instances, refresh=False, cache=cache)
    lists = [answer for answer in answers if answer.stored_at is not None and isinstance(answer.body, list)]
    if not lists:
        return None
    oldest = min(answer.stored_at for answer in lists)
    if len(lists) < len(answers):
        oldest = float("-inf")  # an instance with no list yet: ask again next time
    return [item for answer in lists for item in answer.body if isinstance(item, dict)], oldest
