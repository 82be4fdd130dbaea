"""Who takes the next job: the one placement rule of both runtimes.

A worker's idle line (which idle runner to wake) and a Lambda invocation (which instance's slot to
try first) ask the same question with the same facts: for each candidate its instance (labels), when
it became idle, whether its instance answered its last probe and which checkpoint it has loaded.
The answer is the order to try them in: an instance that is down is left out while another answers
(no job's attempt is burnt on it); among the rest, those with every label the head job asks for come
first, then those with the checkpoint it names loaded (a model switch costs seconds), then the one
idle longest (which spreads jobs over the instances). When no instance answers at all, every
candidate is tried, so that jobs end by the retry rules instead of waiting forever.
"""
from __future__ import annotations

import dataclasses
import typing

from chalicelib import a1111
from chalicelib.store import instances as store_instances

T = typing.TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Candidate(typing.Generic[T]):
    """One runner or slot that could take the job, as placement sees it; `member` is what the
    caller gets back (a runner, an instance)."""

    member: T
    instance: a1111.Instance
    idle_since: float  # smaller is idle longer
    healthy: bool | None  # None: never probed
    loaded_model: str | None


def may_run(healthy: bool | None, *, any_healthy: bool) -> bool:
    """Whether an instance may take jobs: it answered its last probe, or no instance did."""
    return bool(healthy) or not any_healthy


def usable(candidates: typing.Sequence[Candidate[T]], *, others_healthy: bool = False) -> list[Candidate[T]]:
    """The candidates that may take jobs now. `others_healthy`: some instance that is not a
    candidate (a busy one) answers, so a candidate that is down waits for it."""
    any_healthy = others_healthy or any(candidate.healthy for candidate in candidates)
    return [candidate for candidate in candidates if may_run(candidate.healthy, any_healthy=any_healthy)]


def head_matters(candidates: typing.Sequence[Candidate[T]]) -> bool:
    """Whether the head job can change the order (so whether to ask the store for it): the
    candidates differ in labels or in the checkpoint they have loaded."""
    return len(candidates) > 1 and store_instances.choice_matters(
        [candidate.instance.labels for candidate in candidates],
        [candidate.loaded_model for candidate in candidates])


def order(candidates: typing.Sequence[Candidate[T]], *,
          head: store_instances.NextJob | None) -> list[Candidate[T]]:
    """The usable candidates, best first: labels fit, then checkpoint loaded, then idle longest
    (ties keep the given order, so the answer is stable)."""
    def rank(candidate: Candidate[T]) -> tuple:
        if head is None:
            return (False, False, candidate.idle_since)
        return (not candidate.instance.has_labels(head.labels),
                not store_instances.same_model(head.model, candidate.loaded_model),
                candidate.idle_since)

    return sorted(usable(candidates), key=rank)
