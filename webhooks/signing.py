"""Secrets and signatures of the Standard Webhooks specification.

A secret is ``whsec_`` + base64 of random bytes; a message is signed with the decoded
bytes as the HMAC-SHA256 key over ``{webhook-id}.{webhook-timestamp}.{body}``, and the
``webhook-signature`` header is ``v1,`` + base64 of the digest. The ``standardwebhooks``
package (``Webhook(secret).verify(body, headers)``) checks exactly this.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
# The specification asks for 24 to 64 bytes.
SECRET_BYTES = 32


def webhook_secret_new() -> str:
    """A new endpoint secret from a cryptographic random source: ``whsec_`` + base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def webhook_signature(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of ``body`` sent as ``message_id`` at ``timestamp`` (Unix seconds)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")
