"""A job's webhook deliveries as its owner sees them: no body, no secret, no signature."""
from __future__ import annotations

from chalicelib import views
from chalicelib import vocabulary
from chalicelib.store import base as store_base


def delivery_view(delivery: store_base.WebhookDelivery, attempts: list[store_base.WebhookAttempt], *,
                  now: float) -> dict:
    pending = delivery.status == vocabulary.DeliveryStatus.PENDING
    return {
        "webhook_id": delivery.id,
        "type": delivery.event_type,
        "status": delivery.status,
        "in_flight": pending and delivery.claim_token is not None and (delivery.next_attempt_at or 0) > now,
        "event_timestamp": views.iso(delivery.event_at),
        "created_at": views.iso(delivery.created_at),
        "next_attempt_at": views.iso(delivery.next_attempt_at) if pending else None,
        "finished_at": views.iso(delivery.finished_at),
        "redelivery_of": delivery.redelivery_of,
        "attempt_count": delivery.attempts,
        "attempts": [{
            "attempt": item.attempt,
            "started_at": views.iso(item.started_at),
            "finished_at": views.iso(item.finished_at),
            "status_code": item.status_code,
            "response": item.response,
            "error": item.error,
        } for item in attempts],
    }
