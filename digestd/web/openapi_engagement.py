"""The engagement reports' part of the OpenAPI description (:mod:`digestd.web.openapi`
serves it with the rest)."""

from __future__ import annotations

from typing import Any

JSON = "application/json"
INTEGER = {"type": "integer"}
RATE = {"type": ["number", "null"], "description": "unique clickers / sent; null: none sent"}
ERRORS = {
    str(code): {
        "description": words,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for code, words in (
        (400, "A parameter is wrong; `field` names it."),
        (401, "Missing or wrong bearer token."),
        (403, "The admin API is disabled (DIGESTD_ADMIN_TOKEN unset)."),
    )
}


def _ok(schema: dict[str, Any]) -> dict[str, Any]:
    return {"200": {"description": "OK", "content": {JSON: {"schema": schema}}}, **ERRORS}


def _number(name: str, description: str, high: int, default: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": high, "default": default}
    return {"name": name, "in": "query", "description": description, "schema": schema}


FIGURES = {
    "sent": INTEGER,
    "clicks": {**INTEGER, "description": "Clicks that looked like a person's"},
    "unique_clickers": {**INTEGER, "description": "Emails that clicked (each counted once)"},
    "scanner_clicks": {**INTEGER, "description": "Clicks in a link scanner's burst"},
    "click_through_rate": RATE,
}
STORY = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "url": {"type": "string"},
        "category": {"type": "string"},
        "source": {"type": "string"},
        **FIGURES,
    },
}
EDITION = {
    "type": "object",
    "properties": {
        "id": INTEGER,
        "kind": {"type": "string", "enum": ["daily", "weekly"]},
        "period": {"type": "string", "format": "date"},
        **FIGURES,
        "failed": INTEGER,
        "bounced": {
            **INTEGER,
            "description": "Its emails' hard and soft bounces and complaints (a refusal that "
            "is not about the address, or a delay notice, is no bounce)",
        },
        "unsubscribed": {**INTEGER, "description": "Readers sent it who unsubscribed since"},
        "articles": {"type": "array", "items": {"$ref": "#/components/schemas/StoryStats"}},
    },
}
ENGAGEMENT_SCHEMAS: dict[str, Any] = {"StoryStats": STORY, "EditionStats": EDITION}
ENGAGEMENT_PATHS: dict[str, Any] = {
    "/engagement/editions": {
        "get": {
            "summary": "The newest editions with sent, failed, bounced, unsubscribed, clicks, "
            "unique clickers and click-through rate (`articles` empty here)",
            "parameters": [_number("limit", "How many editions.", 200, 30)],
            "responses": _ok(
                {
                    "type": "object",
                    "properties": {
                        "editions": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/EditionStats"},
                        },
                        "tracking": {"type": "string", "enum": ["off", "aggregate", "reader"]},
                    },
                }
            ),
        }
    },
    "/engagement/editions/{id}": {
        "get": {
            "summary": "One edition's figures and each of its articles', most clicked first",
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": INTEGER},
            ],
            "responses": {
                **_ok({"$ref": "#/components/schemas/EditionStats"}),
                "404": {"description": "No such edition", "content": ERRORS["400"]["content"]},
            },
        }
    },
    "/engagement/top": {
        "get": {
            "summary": "The stories with the most unique clickers over the last days",
            "parameters": [
                _number("days", "How many days back.", 90, 7),
                _number("limit", "How many stories.", 100, 10),
            ],
            "responses": _ok(
                {
                    "type": "object",
                    "properties": {
                        "as_of": {"type": "string", "format": "date-time"},
                        "days": INTEGER,
                        "stories": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/StoryStats"},
                        },
                    },
                }
            ),
        }
    },
    "/engagement/days": {
        "get": {
            "summary": "Clicks, clickers and scanner clicks per UTC day",
            "parameters": [_number("days", "How many days back, today included.", 90, 30)],
            "responses": _ok(
                {
                    "type": "object",
                    "properties": {
                        "as_of": {"type": "string", "format": "date-time"},
                        "days": {"type": "array", "items": {"type": "string", "format": "date"}},
                        "clicks": {"type": "array", "items": INTEGER},
                        "clickers": {"type": "array", "items": INTEGER},
                        "scanner_clicks": {"type": "array", "items": INTEGER},
                    },
                }
            ),
        }
    },
}
