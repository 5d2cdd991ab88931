"""The OpenAPI document: readable without a token, and in step with the routes."""

from __future__ import annotations

import re
from typing import Any

from digestd.web.api import ENDPOINTS, PUBLIC_ENDPOINTS
from tests.conftest import WebRig


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_the_document_is_served_without_a_token_and_describes_every_route(web: WebRig) -> None:
    answer = web.client.get("/api/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["servers"] == [{"url": "https://digest.example.com/api"}]
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    # Starlette's "{article:path}" is OpenAPI's "{article}".
    routed = {
        (method, re.sub(r":\w+\}", "}", path))
        for method, path, _ in [*ENDPOINTS, *PUBLIC_ENDPOINTS]
    }
    assert documented == routed
    for path, item in doc["paths"].items():
        for operation in item.values():
            assert operation["summary"] and "200" in operation["responses"], path
            if path != "/openapi.json":
                assert "401" in operation["responses"], path


def test_every_reference_in_the_document_resolves(web: WebRig) -> None:
    doc = web.client.get("/api/openapi.json").json()
    for ref in _refs(doc):
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict)
