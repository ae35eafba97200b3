"""The OpenAPI 3 schema at /api/v1/schema and the interactive page at /api/v1/docs.

Beyond "it renders": real responses of the running API are checked against
the schema the document gives for them, so that the documentation cannot
drift from what the views answer.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def schema(anon: APIClient) -> dict[str, Any]:
    response = anon.get("/api/v1/schema?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def resolve(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def conforms(instance: Any, schema: dict[str, Any], document: dict[str, Any], where: str = "$") -> None:
    """Assert that ``instance`` is valid for the subset of JSON Schema our document uses."""
    schema = resolve(schema, document)
    if "oneOf" in schema:
        failures = []
        for option in schema["oneOf"]:
            try:
                conforms(instance, option, document, where)
                return
            except AssertionError as exc:
                failures.append(str(exc))
        raise AssertionError(f"{where}: matches no oneOf option: {failures}")
    if instance is None:
        assert schema.get("nullable"), f"{where}: null but not nullable"
        return
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(instance, dict), f"{where}: not an object"
        properties = schema.get("properties")
        if properties is not None:
            assert set(instance) <= set(properties), f"{where}: undocumented keys {set(instance) - set(properties)}"
            for name in schema.get("required", []):
                assert name in instance, f"{where}: missing {name}"
            for name, value in instance.items():
                conforms(value, properties[name], document, f"{where}.{name}")
    elif kind == "array":
        assert isinstance(instance, list), f"{where}: not an array"
        for index, item in enumerate(instance):
            conforms(item, schema.get("items", {}), document, f"{where}[{index}]")
    elif kind == "string":
        assert isinstance(instance, str), f"{where}: not a string"
    elif kind == "integer":
        assert isinstance(instance, int) and not isinstance(instance, bool), f"{where}: not an integer"
    elif kind == "number":
        assert isinstance(instance, (int, float)) and not isinstance(instance, bool), f"{where}: not a number"
    elif kind == "boolean":
        assert isinstance(instance, bool), f"{where}: not a boolean"


def response_schema(document: dict[str, Any], method: str, path: str, status: int = 200) -> dict[str, Any]:
    operation = document["paths"][path][method]
    return operation["responses"][str(status)]["content"]["application/json"]["schema"]


def test_schema_is_public_yaml_by_default(anon: APIClient) -> None:
    response = anon.get("/api/v1/schema")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Whisper transcription API"
    # A stale or wrong Authorization header does not turn the docs into a 401.
    assert anon.get("/api/v1/schema/", HTTP_AUTHORIZATION="Bearer nonsense").status_code == 200


def test_docs_page_is_public_html(anon: APIClient) -> None:
    response = anon.get("/api/v1/docs", HTTP_AUTHORIZATION="Basic nonsense")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "swagger-ui" in page and "/api/v1/schema" in page


def test_schema_generation_is_valid_and_warning_free(tmp_path) -> None:
    out = tmp_path / "schema.yaml"
    stderr = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=stderr)
    assert "Error" not in stderr.getvalue() and "Warning" not in stderr.getvalue(), stderr.getvalue()
    assert yaml.safe_load(out.read_text())["paths"]


def test_every_operation_documents_success_and_plain_text_errors(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == {"apiKey", "sessionId"}
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["scheme"]) == ("http", "bearer")
    assert (schemes["sessionId"]["type"], schemes["sessionId"]["in"]) == ("apiKey", "header")
    assert schemes["sessionId"]["name"] == "Authorization"
    for path, item in schema["paths"].items():
        assert path.startswith("/api/v1/") and not path.endswith("/"), path
        for method, operation in item.items():
            if method not in METHODS:
                continue
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), where
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), where
            errors = [r for code, r in responses.items() if not code.startswith("2")]
            assert errors, where
            if "openai" in operation["tags"]:
                # OpenAI's routes answer OpenAI's JSON error objects, as its clients expect.
                for error in errors:
                    assert set(error["content"]) == {"application/json"}, where
                    schema_ref = error["content"]["application/json"]["schema"]
                    assert schema_ref == {"$ref": "#/components/schemas/OpenAIErrorOutput"}, where
                continue
            if (method, path) == ("get", "/api/v1/health/ready"):
                # A readiness report, not an error: its 503 is the 200's JSON, failing checks named.
                assert set(responses) == {"200", "503"}, where
                schemas = {code: responses[code]["content"]["application/json"]["schema"] for code in ("200", "503")}
                assert schemas["503"] == schemas["200"], where
                continue
            for error in errors:
                assert set(error["content"]) == {"text/plain"}, where
                assert error["content"]["text/plain"]["schema"] == {"type": "string"}, where


def test_admin_operations_list_the_reference_errors(schema: dict[str, Any]) -> None:
    patch = schema["paths"]["/api/v1/admin/users/{uuid}"]["patch"]
    messages = {
        example["value"]
        for code in ("400", "401", "403", "404")
        for example in patch["responses"][code]["content"]["text/plain"]["examples"].values()
    }
    assert {
        "Invalid UUID format",
        "token_balance must be an integer",
        "price_multiplier must be non-negative",
        "price_multiplier must be at most 1000",
        "No valid fields to update. Provide token_balance or price_multiplier",
        "Access denied. Admin privileges required",
        "User not found",
    } <= messages
    get = schema["paths"]["/api/v1/admin/users"]["get"]
    assert {p["name"] for p in get["parameters"]} == {"page", "limit", "search", "username"}
    assert get["security"] == [{"apiKey": []}, {"sessionId": []}]


def test_public_operations_need_no_credentials(schema: dict[str, Any]) -> None:
    assert schema["paths"]["/api/v1/health"]["get"]["security"] == []
    assert schema["paths"]["/api/v1/health/ready"]["get"]["security"] == []
    assert schema["paths"]["/api/v1/user/login"]["post"]["security"] == []
    assert schema["paths"]["/api/v1/user/me"]["get"]["security"] == [{"apiKey": []}, {"sessionId": []}]


def test_admin_responses_conform_to_the_schema(schema: dict[str, Any], admin_client: APIClient, user: User) -> None:
    body = admin_client.get("/api/v1/admin/users").json()
    conforms(body, response_schema(schema, "get", "/api/v1/admin/users"), schema)
    body = admin_client.patch(
        f"/api/v1/admin/users/{user.id.hex}", {"token_balance": 1, "price_multiplier": 2}, format="json"
    ).json()
    conforms(body, response_schema(schema, "patch", "/api/v1/admin/users/{uuid}"), schema)


def test_account_responses_conform_to_the_schema(schema: dict[str, Any], anon: APIClient) -> None:
    """The account views' output serializers, checked against the answers the views give."""
    checks: list[tuple[str, str, Any]] = []
    response = anon.get("/api/v1/health")
    checks.append(("get", "/api/v1/health", response.json()))
    # No worker runs here: the readiness report is a 503, in the 200's shape.
    response = anon.get("/api/v1/health/ready")
    assert response.status_code == 503
    checks.append(("get", "/api/v1/health/ready", response.json()))
    response = anon.post("/api/v1/user/register", {"username": "dora", "password": PASSWORD}, format="json")
    checks.append(("post", "/api/v1/user/register", response.json()))
    response = anon.post("/api/v1/user/login", {"username": "dora", "password": PASSWORD}, format="json")
    checks.append(("post", "/api/v1/user/login", response.json()))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {response.json()['session_id']}")
    checks.append(("get", "/api/v1/user/me", client.get("/api/v1/user/me").json()))
    token = client.post("/api/v1/user/token", {"name": "docs"}, format="json").json()
    checks.append(("post", "/api/v1/user/token", token))
    checks.append(("get", "/api/v1/user/token", client.get("/api/v1/user/token").json()))
    checks.append(("get", "/api/v1/user/sessions", client.get("/api/v1/user/sessions").json()))
    revoked = client.delete(f"/api/v1/user/token/{token['token_id']}").json()
    checks.append(("delete", "/api/v1/user/token/{token_id}", revoked))
    checks.append(("post", "/api/v1/user/logout", client.post("/api/v1/user/logout").json()))
    for method, path, body in checks:
        conforms(body, response_schema(schema, method, path), schema, f"{method.upper()} {path}")


def test_file_and_transcription_responses_conform_to_the_schema(
    schema: dict[str, Any], client_key: APIClient, anon: APIClient, django_capture_on_commit_callbacks
) -> None:
    """The whole journey of the reference's examples, each answer checked against the document."""
    from pathlib import Path

    from django.conf import settings

    paths = schema["paths"]
    if "/api/v1/transcribe" not in paths or "/api/v1/file" not in paths:
        pytest.skip("the files and transcriptions routes are not there yet")
    engine = pytest.importorskip("transcriptions.engine")
    engine.install_bundled_models(settings.MODELS_DIR)
    file_item = next(p for p in paths if p.startswith("/api/v1/file/{"))
    job_item = next(p for p in paths if p.startswith("/api/v1/transcribe/{"))

    def check(method: str, path: str, response: Any) -> Any:
        assert response.status_code == 200, (method, path, response.content[:300])
        body = response.json()
        conforms(body, response_schema(schema, method, path), schema, f"{method.upper()} {path}")
        return body

    audio = Path(__file__).resolve().parents[1] / "data" / "jfk.flac"
    # Conversion and inference run in-process (eager Celery) once the request commits.
    with django_capture_on_commit_callbacks(execute=True), audio.open("rb") as upload:
        uploaded = check("post", "/api/v1/file", client_key.post("/api/v1/file", {"file": upload}, format="multipart"))
    file_id = uploaded["files"][0]["uuid"]
    check("get", "/api/v1/file", client_key.get("/api/v1/file"))
    renamed = client_key.patch(f"/api/v1/file/{file_id}", {"filename": "speech.flac"}, format="json")
    check("patch", file_item, renamed)
    download = anon.get(f"/api/v1/file/{file_id}")
    assert download.status_code == 200
    assert download["Content-Type"] in paths[file_item]["get"]["responses"]["200"]["content"]
    check("get", "/api/v1/model", client_key.get("/api/v1/model"))
    with django_capture_on_commit_callbacks(execute=True):
        queued = client_key.post(
            "/api/v1/transcribe",
            {"uuid": file_id, "model": "ggml-tiny.en", "format": ["verbose_json", "srt"]},
            format="json",
        )
    queued = check("post", "/api/v1/transcribe", queued)
    job_id = queued["transcriptions"][0]["uuid"]
    single = check("get", job_item, anon.get(f"/api/v1/transcribe/{job_id}"))
    assert single["status"] == "completed", single
    by_file = check("get", job_item, anon.get(f"/api/v1/transcribe/{file_id}"))
    assert len(by_file["transcriptions"]) == 2
    check("delete", job_item, client_key.delete(f"/api/v1/transcribe/{job_id}"))
    check("delete", file_item, client_key.delete(f"/api/v1/file/{file_id}"))


ACCOUNT_AND_ADMIN_OPERATIONS = {
    ("get", "/api/v1/health"): "health",
    ("post", "/api/v1/user/register"): "user_register",
    ("post", "/api/v1/user/login"): "user_login",
    ("post", "/api/v1/user/logout"): "user_logout",
    ("get", "/api/v1/user/me"): "user_me_get",
    ("patch", "/api/v1/user/me"): "user_me_update",
    ("delete", "/api/v1/user/me"): "user_me_delete",
    ("get", "/api/v1/user/token"): "user_token_list",
    ("post", "/api/v1/user/token"): "user_token_create",
    ("delete", "/api/v1/user/token/{token_id}"): "user_token_revoke",
    ("get", "/api/v1/user/sessions"): "user_sessions_list",
    ("get", "/api/v1/admin/users"): "admin_users_list",
    ("patch", "/api/v1/admin/users/{uuid}"): "admin_users_update",
}


def error_messages(operation: dict[str, Any], status: int) -> set[str]:
    examples = operation["responses"][str(status)]["content"]["text/plain"]["examples"]
    return {example["value"] for example in examples.values()}


def test_account_and_admin_operations_come_from_the_code(schema: dict[str, Any]) -> None:
    """Every account and admin operation, as its extend_schema and serializers describe it."""
    operations = {(method, path) for path, item in schema["paths"].items() for method in item if method in METHODS}
    assert set(ACCOUNT_AND_ADMIN_OPERATIONS) <= operations
    for (method, path), operation_id in ACCOUNT_AND_ADMIN_OPERATIONS.items():
        operation = schema["paths"][path][method]
        assert operation["operationId"] == operation_id
        assert operation["tags"] and operation["summary"]
        # The success body is the output serializer's component, not a schema
        # written inline beside it.
        assert "$ref" in operation["responses"]["200"]["content"]["application/json"]["schema"], (method, path)
        if operation["security"]:
            assert "Missing valid Authorization header with session or API key" in error_messages(operation, 401)
        if path.startswith("/api/v1/admin/"):
            assert error_messages(operation, 403) == {"Access denied. Admin privileges required"}

    register = schema["paths"]["/api/v1/user/register"]["post"]
    assert {"Missing username", "Password must contain at least 1 digit(s)"} <= error_messages(register, 400)
    assert error_messages(register, 409) == {"Username already exists"}
    assert error_messages(register, 413) == {"Request body too large"}
    assert error_messages(register, 415) == {"Unsupported Content-Type"}
    credentials = resolve(register["requestBody"]["content"]["application/json"]["schema"], schema)
    assert set(credentials["required"]) == {"username", "password"}
    login = schema["paths"]["/api/v1/user/login"]["post"]
    assert error_messages(login, 429) == {"Too many failed login attempts. Try again later"}

    # DELETE /user/me takes the password in its body.
    delete_me = schema["paths"]["/api/v1/user/me"]["delete"]
    assert delete_me["requestBody"]["required"] is True
    body = resolve(delete_me["requestBody"]["content"]["application/json"]["schema"], schema)
    assert body["required"] == ["password"]
    # The avatar is a file part of a multipart body.
    update = schema["paths"]["/api/v1/user/me"]["patch"]
    form = resolve(update["requestBody"]["content"]["multipart/form-data"]["schema"], schema)
    assert form["properties"]["avatar"]["format"] == "binary"

    revoke = schema["paths"]["/api/v1/user/token/{token_id}"]["delete"]
    (parameter,) = revoke["parameters"]
    assert parameter["in"] == "path" and "[0-9a-fA-F]{32}" in parameter["schema"]["pattern"]

    listing = schema["paths"]["/api/v1/admin/users"]["get"]
    bounds = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert (bounds["page"]["type"], bounds["page"]["minimum"], bounds["page"]["default"]) == ("integer", 1, 1)
    assert (bounds["limit"]["minimum"], bounds["limit"]["maximum"], bounds["limit"]["default"]) == (1, 100, 10)


def documented_example(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    content = schema["paths"][path][method]["requestBody"]["content"]
    (example,) = [e["value"] for media in content.values() for e in media.get("examples", {}).values()]
    return example


def test_request_examples_are_accepted(schema: dict[str, Any], anon: APIClient, admin_client: APIClient) -> None:
    """Each request example of the document, sent as it is, succeeds."""
    register = documented_example(schema, "post", "/api/v1/user/register")
    assert anon.post("/api/v1/user/register", register, format="json").status_code == 200
    login = documented_example(schema, "post", "/api/v1/user/login")
    response = anon.post("/api/v1/user/login", login, format="json")
    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {response.json()['session_id']}")
    token = documented_example(schema, "post", "/api/v1/user/token")
    assert client.post("/api/v1/user/token", token, format="json").status_code == 200
    user = User.objects.get(username=register["username"])
    change = documented_example(schema, "patch", "/api/v1/admin/users/{uuid}")
    assert admin_client.patch(f"/api/v1/admin/users/{user.id.hex}", change, format="json").status_code == 200
    delete = documented_example(schema, "delete", "/api/v1/user/me")
    assert client.delete("/api/v1/user/me", delete, format="json").status_code == 200


def test_response_examples_conform_to_the_schema(schema: dict[str, Any]) -> None:
    for method, path in ACCOUNT_AND_ADMIN_OPERATIONS:
        content = schema["paths"][path][method]["responses"]["200"]["content"]["application/json"]
        (example,) = content["examples"].values()
        conforms(example["value"], content["schema"], schema, f"{method.upper()} {path}")
