"""The admin site's read-only view of webhook endpoints and their delivery log."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import User
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.signing import webhook_secret_new

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> Client:
    admin = User.objects.create(username="operator", password="!", is_admin=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


def test_endpoints_and_their_deliveries_are_shown_read_only_and_never_the_secret(operator: Client) -> None:
    carol = User.objects.create(username="carol", password="!")
    endpoint = WebhookEndpoint.objects.create(
        owner=carol, url="https://hooks.example/in", events=["transcription.completed"], secret=webhook_secret_new()
    )
    other = WebhookEndpoint.objects.create(owner=carol, url="https://other.example/in", events=[], secret="x")
    WebhookDelivery.objects.create(
        endpoint=endpoint, event_type="transcription.completed", message_id="msg_mine", payload="{}", attempts=2
    )
    WebhookDelivery.objects.create(
        endpoint=other, event_type="transcription.failed", message_id="msg_other", payload="{}"
    )

    listing = operator.get("/admin/webhooks/webhookendpoint/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "https://hooks.example/in" in page and "1 deliveries" in page

    detail = operator.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/")
    assert detail.status_code == 200
    assert endpoint.secret not in detail.content.decode()
    assert 'name="url"' not in detail.content.decode()  # read-only: no form field

    log = operator.get(f"/admin/webhooks/webhookdelivery/?endpoint__id__exact={endpoint.pk}")
    assert log.status_code == 200
    assert "msg_mine" in log.content.decode() and "msg_other" not in log.content.decode()
    assert operator.get("/admin/webhooks/webhookdelivery/?q=msg_other").status_code == 200
    assert operator.get("/admin/webhooks/webhookdelivery/add/").status_code == 403
    assert operator.get("/admin/webhooks/webhookendpoint/add/").status_code == 403
