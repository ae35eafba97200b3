"""Schemathesis hooks for tests/site/test_schemathesis.py (loaded by the CLI through ``SCHEMATHESIS_HOOKS``).

Every request carries the fuzzing user's API key as ``Authorization: Bearer``.
Some operations under test revoke it (``DELETE /user/token/{token_id}`` of
that very key, found in ``GET /user/token``) or delete the user
(``DELETE /user/me``). Schemathesis then sees a 401, asks this provider again
and replays the request once: the provider checks the key it has, and makes a
new one, with the user's session or, when the user is gone, for a new user.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from typing import Any

import schemathesis

BASE_URL = os.environ["FUZZ_BASE_URL"]
PASSWORD = "Fuzz-Passw0rd-1!"


def call(method: str, path: str, authorization: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": authorization} if authorization else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(BASE_URL + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@schemathesis.auth()
class FuzzingUserApiKey:
    def __init__(self) -> None:
        self.api_key = os.environ["FUZZ_API_KEY"]
        self.session_id = os.environ["FUZZ_SESSION_ID"]

    def get(self, case: Any, context: Any) -> str:
        if call("GET", "/user/me", f"Bearer {self.api_key}")[0] == 200:
            return self.api_key
        status, body = call("POST", "/user/token", f"Basic {self.session_id}", {"name": "fuzzing"})
        if status != 200:
            # The session ended with its user (DELETE /user/me) or by a logout: a new user.
            username = f"fuzz_{secrets.token_hex(6)}"
            status, body = call("POST", "/user/register", "", {"username": username, "password": PASSWORD})
            assert status == 200, body
            self.session_id = body["session_id"]
            status, body = call("POST", "/user/token", f"Basic {self.session_id}", {"name": "fuzzing"})
            assert status == 200, body
        self.api_key = body["token"]
        return self.api_key

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        if case.operation.path == "/api/v1/user/logout":
            # Logout takes a session, as its security says: an API key is a 400 there.
            case.headers["Authorization"] = f"Basic {self.session_id}"
        else:
            case.headers["Authorization"] = f"Bearer {data}"
