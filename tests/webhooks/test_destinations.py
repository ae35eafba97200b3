"""The SSRF guard: which hosts a webhook may reach, at registration and at each delivery.

No test here sends anything off this machine: refused addresses are refused before any
connection, public ones are only resolved (IP literals need no DNS), and deliveries go to
the receiver on 127.0.0.1. Where a test needs a name to resolve to a chosen address (DNS
rebinding), ``socket.getaddrinfo`` is replaced: a fault no test can cause otherwise.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from tests.webhooks.conftest import MakeJob
from tests.webhooks.receiver import WebhookReceiver
from webhooks import services
from webhooks.destinations import URL_BLOCKED_MESSAGE, address_refused, destination_resolve
from webhooks.models import WebhookDelivery, WebhookEndpoint
from whisper_site.errors import ApplicationError

URL = "/api/v1/user/webhooks"
EVENTS = ["transcription.completed"]
REAL_GETADDRINFO = socket.getaddrinfo


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "2002:7f00:1::1",
        "64:ff9b::a9fe:a9fe",
    ],
)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert address_refused(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1"])
def test_global_addresses_pass(address: str) -> None:
    assert not address_refused(ipaddress.ip_address(address))


def test_ipv4_mapped_addresses_are_refused_even_when_global() -> None:
    # ::ffff:0:0/96 is no address a receiver listens on: refused whatever it carries.
    assert address_refused(ipaddress.ip_address("::ffff:8.8.8.8"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.7:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://localhost/hook",
        "http://0.0.0.0/",
        "http://2130706433/",  # 127.0.0.1 as one number
    ],
)
def test_registration_refuses_hosts_on_private_networks(client_session: APIClient, url: str, settings: Any) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    response = client_session.post(URL, {"url": url, "events": EVENTS}, format="json")
    assert (response.status_code, response.content.decode()) == (400, URL_BLOCKED_MESSAGE)
    assert not WebhookEndpoint.objects.exists()

    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    response = client_session.post(URL, {"url": url, "events": EVENTS}, format="json")
    assert response.status_code == 200, response.content


def test_every_address_of_a_name_must_be_global(monkeypatch: pytest.MonkeyPatch) -> None:
    # One public and one private address: the private one could be reached, so the name is refused.
    answers = [("93.184.215.14", 443), ("10.0.0.1", 443)]
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({"mixed.example": answers}))
    with pytest.raises(ApplicationError) as refused:
        destination_resolve(url="https://mixed.example/hook", allow_private=False)
    assert refused.value.message == URL_BLOCKED_MESSAGE


@pytest.mark.django_db
def test_a_host_that_does_not_resolve_is_refused(client_session: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({}))
    response = client_session.post(URL, {"url": "https://nowhere.example/hook", "events": EVENTS}, format="json")
    assert (response.status_code, response.content.decode()) == (400, "Invalid url: the host does not resolve")


def fake_getaddrinfo(names: dict[str, list[tuple[str, int]]]) -> Any:
    """getaddrinfo that answers ``names`` from the table and anything else as the system does (IP literals)."""

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host in names:
            return [
                (socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address, _ in names[host]
            ]
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return REAL_GETADDRINFO(host, port, *args, **kwargs)

    return getaddrinfo


@pytest.mark.django_db
def test_a_name_that_later_resolves_to_a_private_address_is_refused_at_delivery(
    user: User,
    make_job: MakeJob,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    url = f"http://rebind.example:{webhook_receiver.port}/hook"
    # At registration the name is public...
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({"rebind.example": [("93.184.215.14", 0)]}))
    services.webhook_endpoint_create(user=user, url=url, events=EVENTS)
    # ...and by the time of the delivery it points at this machine, where the receiver listens.
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({"rebind.example": [("127.0.0.1", 0)]}))
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_event_emit(job=make_job(user), event_type="transcription.completed")
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert delivery.last_error == "Refused: " + URL_BLOCKED_MESSAGE.removeprefix("Invalid url: ")
    assert webhook_receiver.requests == []


@pytest.mark.django_db
def test_the_connection_goes_to_the_checked_address_with_the_urls_host(
    user: User,
    make_job: MakeJob,
    webhook_receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    allow_private_networks: None,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The name resolves once per attempt, to the receiver's address: the request reaches it
    # on that address, and still names the URL's host and path.
    url = f"http://hooks.example:{webhook_receiver.port}/in?source=whisper"
    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo({"hooks.example": [("127.0.0.1", 0)]}))
    endpoint = services.webhook_endpoint_create(user=user, url=url, events=EVENTS)
    with django_capture_on_commit_callbacks(execute=True):
        services.webhook_event_emit(job=make_job(user), event_type="transcription.completed")
    [request] = webhook_receiver.requests
    assert request.headers["host"] == f"hooks.example:{webhook_receiver.port}"
    assert request.path == "/in?source=whisper"
    assert webhook_receiver.verified(endpoint.secret)[0]["type"] == "transcription.completed"
    assert WebhookDelivery.objects.get().status == "succeeded"
