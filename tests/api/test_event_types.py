"""GET /api/v1/event-types on the real application: the catalog, its caching, and its OpenAPI description."""

from __future__ import annotations

import jsonschema
from starlette.testclient import TestClient

from domain.events.catalog import EVENT_TYPES

PATH = "/api/v1/event-types"


def test_lists_every_subscribable_type_with_description_schema_and_example(client: TestClient) -> None:
    response = client.get(PATH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    entries = response.json()["event_types"]
    assert [entry["name"] for entry in entries] == [event_type.name for event_type in EVENT_TYPES]
    for entry in entries:
        assert set(entry) == {"name", "description", "schema", "example"}
        assert entry["description"]
        jsonschema.Draft202012Validator.check_schema(entry["schema"])
        jsonschema.validate(entry["example"], entry["schema"], cls=jsonschema.Draft202012Validator)
        assert entry["example"]["type"] == entry["name"]


def test_names_the_signature_schemes_and_where_v1a_public_keys_are_published(client: TestClient) -> None:
    schemes = {entry["id"]: entry for entry in client.get(PATH).json()["signature_schemes"]}
    assert set(schemes) == {"v1", "v1a"} and schemes["v1a"]["algorithm"] == "Ed25519"
    assert "whpk_" in schemes["v1a"]["key"] and "/api/v1/webhook-endpoints/{id}" in schemes["v1a"]["key"]


def test_needs_no_api_key_and_is_cacheable(client: TestClient) -> None:
    response = client.get(PATH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=86400"
    assert response.headers["etag"].startswith('"')
    assert response.headers["x-request-id"]


def test_answers_not_modified_to_a_matching_etag(client: TestClient) -> None:
    etag = client.get(PATH).headers["etag"]
    again = client.get(PATH, headers={"If-None-Match": f'"other", {etag}'})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["cache-control"] == "public, max-age=86400"
    assert client.get(PATH, headers={"If-None-Match": '"other"'}).status_code == 200


def test_other_methods_are_not_allowed(client: TestClient) -> None:
    assert client.post(PATH).status_code == 405


def test_the_openapi_document_describes_it(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][PATH]["get"]
    assert operation["operationId"] == "event_types"
    ok = operation["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["required"] == ["event_types"]
    assert set(ok["headers"]) == {"Cache-Control", "ETag"}
    assert "304" in operation["responses"]
