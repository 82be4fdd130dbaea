"""Each owner's default checkpoint: A1111's `POST /sdapi/v1/options {"sd_model_checkpoint"}` without the
global switch.

A1111 clients choose a model by changing A1111's options for everyone; on shared instances that would
change other tenants' queued jobs. Here the choice is stored per owner and applied to that owner's later
jobs that name no checkpoint, as `override_settings.sd_model_checkpoint` (which placement reads, so an
instance with it loaded is preferred). Callers: the root options routes and any A1111-native profile.
"""
from __future__ import annotations

import time

from chalicelib import a1111_policy
from chalicelib import catalog
from chalicelib import context as context_module
from chalicelib import errors
from chalicelib import store
from chalicelib.store import instances as store_instances

CHECKPOINT = store_instances.CHECKPOINT
OPTIONS_PATH = "/sdapi/v1/options"
MAX_NAME_LENGTH = 512
MAX_LISTED = 20  # names listed in a 422 when the checkpoint is unknown


def choose(ctx: context_module.Context, body: object, *, owner: str) -> str:
    """Store `owner`'s checkpoint from an options body; returns the title stored (A1111's canonical name).

    Only `sd_model_checkpoint` may be set (any other option would change A1111 for every tenant: 405);
    it must name a checkpoint of the merged model list by title, model name or hash (422 naming the
    known ones otherwise)."""
    if not isinstance(body, dict):
        raise errors.ValidationFailed.single(["body"], "the request body must be a JSON object", "model_type")
    others = sorted(key for key in body if key != CHECKPOINT)
    if others:
        raise errors.MethodNotAllowed(
            f"only {CHECKPOINT} can be set here (as this token's default for its later jobs); A1111's other "
            f"options are global and stay as the operator set them: {', '.join(others)[:200]}")
    name = body.get(CHECKPOINT)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise errors.ValidationFailed.single(["body", CHECKPOINT], f"a checkpoint's title, model name or hash "
                                             f"(1 to {MAX_NAME_LENGTH} characters)", "string_type")
    if not _allowed(ctx):
        raise errors.MethodNotAllowed(f"{CHECKPOINT} is not in A1111_ALLOWED_OVERRIDES, so no job may choose "
                                      "its checkpoint")
    items, _ = catalog.gather(ctx, catalog.SD_MODELS, refresh=False, cache=store.make_cache(ctx.store))
    item = catalog.find(catalog.SD_MODELS, items, name.strip())
    if item is None:
        known = [str(entry.get("title")) for entry in items[:MAX_LISTED]]
        raise errors.ValidationFailed.single(
            ["body", CHECKPOINT], f"no checkpoint {name.strip()[:100]!r} on any A1111 instance; known: "
            + ", ".join(known) + (" ..." if len(items) > MAX_LISTED else ""), "value_error")
    title = item.get("title") or name.strip()
    ctx.store.set_model_choice(owner, title, now=time.time())
    return title


def current(ctx: context_module.Context, *, owner: str) -> str | None:
    """The checkpoint `owner` chose, or None."""
    return ctx.store.get_model_choice(owner)


def takes_owner_choice(ctx: context_module.Context, payload: dict) -> bool:
    """Whether a job with this A1111 request takes its owner's checkpoint (the store reads it in the
    job's own transaction, `NewJob.owner_checkpoint`): it names none itself, and jobs may choose one."""
    return store_instances.requested_model(payload) is None and _allowed(ctx)


def _allowed(ctx: context_module.Context) -> bool:
    return a1111_policy.Policy.from_settings(ctx.settings).allows_override(CHECKPOINT)


def show(options: object, *, checkpoint: str | None) -> object:
    """A1111's options answer as this owner sees it: its own checkpoint, when it chose one."""
    if checkpoint is None or not isinstance(options, dict):
        return options
    return {**options, CHECKPOINT: checkpoint}
