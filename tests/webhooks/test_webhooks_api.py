"""``/user/webhooks``: register, list, delete, the delivery log, and what is refused."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from webhooks.models import WebhookDelivery, WebhookEndpoint

URL = "/api/v1/user/webhooks"
# A global address written as an IP literal: registration resolves it without any DNS
# query and makes no connection to it.
PUBLIC_URL = "https://93.184.215.14/hooks/whisper"
EVENTS = ["transcription.completed", "transcription.failed"]


def register(client: APIClient, body: Any) -> Any:
    return client.post(URL, body, format="json")


@pytest.mark.django_db
def test_register_answers_the_secret_once_and_lists_without_it(client_session: APIClient) -> None:
    response = register(client_session, {"url": PUBLIC_URL, "events": EVENTS})
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"message", "uuid", "url", "events", "created_at", "secret", "note"}
    assert body["message"] == "Webhook registered successfully"
    assert (body["url"], body["events"]) == (PUBLIC_URL, EVENTS)
    assert len(body["uuid"]) == 32 and body["uuid"] == body["uuid"].lower()
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) >= 24

    listed = client_session.get(URL)
    assert listed.status_code == 200
    assert listed.json() == {
        "webhooks": [{"uuid": body["uuid"], "url": PUBLIC_URL, "events": EVENTS, "created_at": body["created_at"]}]
    }
    assert body["secret"] not in listed.content.decode()
    # Every new endpoint has a secret of its own.
    second = register(client_session, {"url": PUBLIC_URL, "events": EVENTS}).json()
    assert second["secret"] != body["secret"]
    assert [row["uuid"] for row in client_session.get(URL).json()["webhooks"]] == [second["uuid"], body["uuid"]]


@pytest.mark.django_db
def test_api_key_works_and_credentials_are_required(client_key: APIClient, anon: APIClient) -> None:
    assert register(client_key, {"url": PUBLIC_URL, "events": ["transcription.cancelled"]}).status_code == 200
    assert client_key.get(URL).status_code == 200
    for response in (anon.get(URL), register(anon, {"url": PUBLIC_URL, "events": EVENTS})):
        assert response.status_code == 401
        assert response["Content-Type"].startswith("text/plain")


@pytest.mark.django_db
def test_repeated_events_are_kept_once_in_order(client_session: APIClient) -> None:
    events = ["transcription.failed", "transcription.completed", "transcription.failed"]
    body = register(client_session, {"url": PUBLIC_URL, "events": events}).json()
    assert body["events"] == ["transcription.failed", "transcription.completed"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": EVENTS}, "Missing 'url' field in request body"),
        ({"url": None, "events": EVENTS}, "Missing 'url' field in request body"),
        ({"url": 7, "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "ftp://93.184.215.14/x", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "javascript:alert(1)", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "http:///path", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "http://93.184.215.14:99999/", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "http://93.184.215.14/a b", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "http://93.184.215.14/\u00e9", "events": EVENTS}, "Invalid url: must be an http or https URL"),
        ({"url": "https://93.184.215.14/" + "a" * 2048, "events": EVENTS}, "Invalid url: at most 2048 characters"),
        (
            {"url": "https://user:pw@93.184.215.14/", "events": EVENTS},
            "Invalid url: credentials in the URL are not allowed",
        ),
        ({"url": PUBLIC_URL}, "Missing 'events' field in request body"),
        ({"url": PUBLIC_URL, "events": None}, "Missing 'events' field in request body"),
        ({"url": PUBLIC_URL, "events": "transcription.completed"}, "Invalid events: must be a list of event types"),
        ({"url": PUBLIC_URL, "events": [1]}, "Invalid events: must be a list of event types"),
        ({"url": PUBLIC_URL, "events": []}, "At least one event must be specified"),
        (
            {"url": PUBLIC_URL, "events": ["transcription.completed", "transcription.started"]},
            "Invalid event: transcription.started. Must be one of: "
            "transcription.completed, transcription.failed, transcription.cancelled",
        ),
        ({"url": PUBLIC_URL, "events": EVENTS, "secret": "whsec_x"}, "Unknown field: secret"),
    ],
)
def test_invalid_registrations_are_plain_text_400s(client_session: APIClient, body: Any, message: str) -> None:
    response = register(client_session, body)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == message
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.django_db
def test_a_body_that_is_not_an_object_is_refused(client_session: APIClient) -> None:
    response = client_session.post(URL, [PUBLIC_URL], format="json")
    assert (response.status_code, response.content.decode()) == (400, "Request body must be a JSON object")


@pytest.mark.django_db
def test_endpoints_per_user_are_capped(client_session: APIClient, other_client: APIClient, settings: Any) -> None:
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    for _ in range(2):
        assert register(client_session, {"url": PUBLIC_URL, "events": EVENTS}).status_code == 200
    response = register(client_session, {"url": PUBLIC_URL, "events": EVENTS})
    assert (response.status_code, response.content.decode()) == (400, "Maximum number of webhooks reached (2)")
    # The cap is per user.
    assert register(other_client, {"url": PUBLIC_URL, "events": EVENTS}).status_code == 200


@pytest.mark.django_db
def test_delete_removes_the_endpoint_and_its_log(client_session: APIClient, user: User) -> None:
    created = register(client_session, {"url": PUBLIC_URL, "events": EVENTS}).json()
    endpoint = WebhookEndpoint.objects.get(id=created["uuid"])
    WebhookDelivery.objects.create(endpoint=endpoint, event_type=EVENTS[0], message_id="msg_x", payload="{}")
    response = client_session.delete(f"{URL}/{created['uuid']}")
    assert response.status_code == 200
    assert response.json() == {"message": "Webhook deleted successfully", "uuid": created["uuid"]}
    assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
    again = client_session.delete(f"{URL}/{created['uuid']}")
    assert (again.status_code, again.content.decode()) == (404, "Webhook not found or access denied")


@pytest.mark.django_db
def test_another_users_endpoint_is_not_found(client_session: APIClient, other_client: APIClient) -> None:
    created = register(client_session, {"url": PUBLIC_URL, "events": EVENTS}).json()
    hyphenated = str(WebhookEndpoint.objects.get().id)
    for path in (f"{URL}/{created['uuid']}", f"{URL}/{hyphenated}"):
        for response in (other_client.delete(path), other_client.get(f"{path}/deliveries")):
            assert (response.status_code, response.content.decode()) == (404, "Webhook not found or access denied")
    assert other_client.get(URL).json() == {"webhooks": []}
    assert WebhookEndpoint.objects.count() == 1
    # The owner still reaches it, by either form of its id.
    assert client_session.get(f"{URL}/{hyphenated}/deliveries").status_code == 200


@pytest.mark.django_db
def test_malformed_ids_and_pages_are_400s(client_session: APIClient) -> None:
    for response in (client_session.delete(f"{URL}/nope"), client_session.get(f"{URL}/nope/deliveries")):
        assert (response.status_code, response.content.decode()) == (400, "Invalid webhook ID format")
    created = register(client_session, {"url": PUBLIC_URL, "events": EVENTS}).json()
    response = client_session.get(f"{URL}/{created['uuid']}/deliveries?limit=0")
    assert (response.status_code, response.content.decode()) == (400, "Invalid limit. Must be between 1 and 100")


@pytest.mark.django_db
def test_delivery_log_lists_newest_first_with_pagination(client_session: APIClient) -> None:
    created = register(client_session, {"url": PUBLIC_URL, "events": EVENTS}).json()
    endpoint = WebhookEndpoint.objects.get(id=created["uuid"])
    for index in range(3):
        WebhookDelivery.objects.create(endpoint=endpoint, event_type=EVENTS[0], message_id=f"msg_{index}", payload="{}")
    response = client_session.get(f"{URL}/{created['uuid']}/deliveries?limit=2")
    assert response.status_code == 200
    body = response.json()
    assert body["pagination"] == {"page": 1, "limit": 2, "total_count": 3, "total_pages": 2}
    assert [row["webhook_id"] for row in body["deliveries"]] == ["msg_2", "msg_1"]
    row = body["deliveries"][0]
    assert set(row) == {
        "uuid",
        "webhook_id",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_retry_at",
        "created_at",
        "last_attempt_at",
    }
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("pending", 0, None)
    assert (row["next_retry_at"], row["last_attempt_at"]) == (None, "1970-01-01 00:00:00")
