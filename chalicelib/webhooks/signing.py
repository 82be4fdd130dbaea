"""Standard Webhooks signing of a delivery, and the checks on a job's webhook_secret."""
from __future__ import annotations

import base64
import binascii
import datetime
import typing

if typing.TYPE_CHECKING:
    import standardwebhooks

USER_AGENT = "a1111-async-webhooks/1"
SECRET_PREFIX = "whsec_"
SECRET_HEADER = "X-Webhook-Secret"


def signer(secret: str) -> standardwebhooks.Webhook:
    """`whsec_<base64>` is decoded as the standardwebhooks package does; any other secret is its
    UTF-8 bytes (the package would base64-decode a plain string, so it gets bytes)."""
    import standardwebhooks  # noqa: PLC0415 - imported at the first delivery (see the package docstring)

    if secret.startswith(SECRET_PREFIX):
        return standardwebhooks.Webhook(secret)
    return standardwebhooks.Webhook(secret.encode("utf-8"))


def secret_problem(secret: str) -> str | None:
    """Why a webhook_secret cannot be used, or None. Never echoes the secret."""
    if not all(0x21 <= ord(ch) <= 0x7E for ch in secret):
        return (f"webhook_secret must be printable ASCII without spaces (it is also sent in the "
                f"{SECRET_HEADER} header)")
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            return "a webhook_secret starting with whsec_ must continue with a non-empty base64 key"
    return None


def signature_headers(secret: str, *, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature (v1, HMAC-SHA256 of "id.timestamp.body")."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signer(secret).sign(msg_id=webhook_id, timestamp=moment, data=body),
    }


def request_headers(secret: str | None, *, webhook_id: str, timestamp: int, body: str,
                    send_secret_header: bool) -> dict[str, str]:
    """Every header of one attempt but Host (the target adds it)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "webhook-id": webhook_id, "webhook-timestamp": str(timestamp)}
    if secret:
        headers.update(signature_headers(secret, webhook_id=webhook_id, timestamp=timestamp, body=body))
        if send_secret_header:
            headers[SECRET_HEADER] = secret
    return headers
