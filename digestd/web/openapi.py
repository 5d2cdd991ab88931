"""The OpenAPI 3.1 description of ``/api``, written by hand next to the routes it describes
(a test checks that every route in ``api.ENDPOINTS`` is here and nothing else is).

Served without the admin token on purpose: it holds no data, only the shape of the API, and
tools (code generators, API explorers) fetch it before anyone has configured a token.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from digestd import __version__
from digestd.content.categories import CATEGORIES
from digestd.models import SubscriberStatus
from digestd.readers.bounces import Outcome
from digestd.readers.export import EXPORT_COLUMNS
from digestd.web.context import web
from digestd.web.openapi_engagement import ENGAGEMENT_PATHS, ENGAGEMENT_SCHEMAS

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _page(field: str, schema: str) -> dict[str, Any]:
    """A page of a keyset-paged list: its rows under ``field``, the cursor to the next."""
    rows = {"type": "array", "items": {"$ref": f"#/components/schemas/{schema}"}}
    return _json(
        {
            "type": "object",
            "properties": {
                field: rows,
                "next_cursor": {"type": ["string", "null"]},
                "limit": {"type": "integer"},
            },
        }
    )


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "A parameter is wrong; `field` names it.",
        401: "Missing or wrong bearer token.",
        403: "The admin API is disabled (DIGESTD_ADMIN_TOKEN unset).",
        404: "Nothing to show.",
        415: "The body is not JSON.",
        422: "Every item was rejected.",
        502: "The mail server refused the message.",
        429: "Too many requests; `Retry-After` says when to try again.",
    }
    return {str(code): _json(ERROR, words[code]) for code in (401, 403, *codes)}


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False) -> Any:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


STRING = {"type": "string"}
DATETIME = {"type": "string", "format": "date-time"}
KIND = {"type": "string", "enum": ["daily", "weekly"]}
PAGING = [
    _query(
        "limit",
        "Rows per page (1-500).",
        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
    ),
    _query("cursor", "`next_cursor` of the previous page; opaque.", STRING),
]

PATHS: dict[str, dict[str, Any]] = {
    "/articles": {
        "post": {
            "summary": "Add or update articles (one object or an array, SPEC §3)",
            "requestBody": {"required": True, "content": {JSON: {"schema": {}}}},
            "responses": {
                "200": _json({"$ref": "#/components/schemas/IngestReport"}),
                **_errors(400, 415, 422),
            },
        }
    },
    "/subscribers": {
        "get": {
            "summary": "List and search subscribers, newest first",
            "parameters": [
                _query("q", "Part of the address, case-insensitive.", STRING),
                _query(
                    "status",
                    "Only this status.",
                    {"type": "string", "enum": [str(s) for s in SubscriberStatus]},
                ),
                _query(
                    "category",
                    "Only readers of this category.",
                    {"type": "string", "enum": list(CATEGORIES)},
                ),
                *PAGING,
            ],
            "responses": {
                "200": _page("subscribers", "Subscriber"),
                **_errors(400),
            },
        }
    },
    "/subscribers/export": {
        "get": {
            "summary": "Every subscriber as CSV, as `digestd subscribers export` writes it",
            "responses": {
                "200": {
                    "description": "CSV with the header " + ",".join(EXPORT_COLUMNS),
                    "content": {"text/csv": {"schema": STRING}},
                },
                **_errors(),
            },
        }
    },
    "/suppressions": {
        "get": {
            "summary": "Addresses never mailed again (kept as SHA-256 hashes), newest first",
            "parameters": [_query("email", "Look one address up.", STRING), *PAGING],
            "responses": {
                "200": _page("suppressions", "Suppression"),
                **_errors(400),
            },
        }
    },
    "/stats": {
        "get": {
            "summary": "Subscribers and queue by status, the last edition of each kind",
            "responses": {"200": _json({"$ref": "#/components/schemas/Stats"}), **_errors()},
        }
    },
    "/editions/preview": {
        "get": {
            "summary": "An edition as a reader of these categories would get it; sends nothing",
            "parameters": [
                _query("kind", "Which edition.", KIND, required=True),
                _query("categories", "Comma-separated slugs, or `all`.", STRING, required=True),
                _query("now", "Act as of this instant (ISO 8601 with zone).", DATETIME),
                _query(
                    "format",
                    "HTML or the text part.",
                    {"type": "string", "enum": ["html", "text"], "default": "html"},
                ),
            ],
            "responses": {
                "200": {
                    "description": "The rendered edition",
                    "content": {"text/html": {"schema": STRING}, "text/plain": {"schema": STRING}},
                },
                **_errors(400, 404),
            },
        }
    },
    "/editions/trigger": {
        "post": {
            "summary": "Queue an edition now, once per reader per local date/week",
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["kind"],
                            "properties": {
                                "kind": KIND,
                                "emails": {"type": "array", "items": STRING, "maxItems": 1000},
                                "all": {"type": "boolean"},
                            },
                            "additionalProperties": False,
                        }
                    }
                },
            },
            "responses": {
                "200": _json({"$ref": "#/components/schemas/TriggerReport"}),
                **_errors(400, 415),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document (no token needed)",
            "security": [],
            "responses": {"200": _json({"type": "object"})},
        }
    },
}

PATHS["/bounces"] = {
    "post": {
        "summary": "Process a raw RFC 3464 DSN or RFC 5965 ARF report (bounce or complaint)",
        "description": "The body is the raw report message (or a bounce without a report "
        "part, sent to a VERP address). Every report is kept in the bounce ledger. Only an "
        "address-level status (X.1.1, X.1.2, X.1.3, X.1.6, X.1.10, X.2.1) suppresses, as do "
        "complaints and three soft bounces (4.x.x, 5.2.2, 5.4.4) in a row on different days; "
        "policy and content refusals (X.7.x and the like) are `failed-not-address`. A report "
        "counts only "
        "with proof it saw the message: a validly signed VERP envelope sender, or the exact "
        "(keyed) Message-ID of the returned original. Anything else is answered "
        "`unmatched` and changes no one.",
        "requestBody": {
            "required": True,
            "content": {"message/rfc822": {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "200": _json({"$ref": "#/components/schemas/BounceResult"}),
            **_errors(400, 415),
        },
    }
}

ARTICLE_ID = {
    "name": "article",
    "in": "path",
    "required": True,
    "description": "The article's `id` (as sent to POST /articles; URL-encoded).",
    "schema": STRING,
}
STANDING = _json({"$ref": "#/components/schemas/Standing"})
PATHS["/articles/{article}/pin"] = {
    "post": {
        "summary": "Pin an article: it leads every edition of its categories until `until`",
        "description": "A pinned article comes first in every edition whose reader follows "
        "one of its categories, planned before `until` runs out at that edition's send time, "
        "even one published before the edition's window or sent in an earlier daily. "
        "Pinning releases a hold. Editions already planned keep what they hold.",
        "parameters": [ARTICLE_ID],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["until"],
                        "properties": {
                            "until": {
                                **DATETIME,
                                "description": "With a zone; in the future, at most 366 days",
                            }
                        },
                    }
                }
            },
        },
        "responses": {"200": STANDING, **_errors(400, 404, 415)},
    },
    "delete": {
        "summary": "Unpin an article (it is ranked like any other again)",
        "parameters": [ARTICLE_ID],
        "responses": {"200": STANDING, **_errors(404)},
    },
}
PATHS["/articles/{article}/hold"] = {
    "post": {
        "summary": "Hold an article: it goes in no edition planned from now on",
        "description": "Holding ends a pin. No body.",
        "parameters": [ARTICLE_ID],
        "responses": {"200": STANDING, **_errors(404)},
    },
    "delete": {
        "summary": "Release a held article",
        "parameters": [ARTICLE_ID],
        "responses": {"200": STANDING, **_errors(404)},
    },
}
PATHS["/editions/test"] = {
    "post": {
        "summary": "Mail today's edition for some categories to one address (a test send)",
        "description": "Uses up nobody's edition: no edition, digest or queue row is "
        "written. The subject starts with `[Test]`, the Message-ID with `test.`; the "
        "message's personal links name no reader. At most 10 test sends an hour to one "
        "address and 60 in all (with the admin page's); then 429 with `Retry-After`.",
        "requestBody": {
            "required": True,
            "content": {
                JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["kind", "to"],
                        "properties": {
                            "kind": KIND,
                            "to": {"type": "string", "format": "email"},
                            "categories": {
                                "description": "Slugs (a list or comma-separated), or "
                                "`all` (the default)",
                                "oneOf": [STRING, {"type": "array", "items": STRING}],
                            },
                        },
                    }
                }
            },
        },
        "responses": {
            "200": _json({"$ref": "#/components/schemas/TestSent"}),
            **_errors(400, 404, 415, 429, 502),
        },
    }
}

COUNTS = {"type": "object", "additionalProperties": {"type": "integer"}}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": STRING, "field": STRING},
    },
    "Subscriber": {
        "type": "object",
        "properties": {
            "public_id": STRING,
            "email": {"type": "string", "format": "email"},
            "status": STRING,
            "categories": {"type": "array", "items": STRING},
            "frequency": {"type": "string", "enum": ["daily", "weekly", "both"]},
            "timezone": STRING,
            "created_at": DATETIME,
            "confirmed_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "Suppression": {
        "type": "object",
        "properties": {"email_hash": STRING, "reason": STRING, "created_at": DATETIME},
    },
    "Stats": {
        "type": "object",
        "properties": {
            "as_of": DATETIME,
            "subscribers": COUNTS,
            "queue": {
                **COUNTS,
                "description": "Deliveries waiting (queued) and in flight (sending)",
            },
            "oldest_queued_due_at": {"type": ["string", "null"], "format": "date-time"},
            "last_editions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "kind": KIND,
                        "period": {"type": "string", "format": "date"},
                        "created_at": DATETIME,
                        "sent": {"type": "integer"},
                        "failed": {"type": "integer"},
                        "skipped": {"type": "integer"},
                        "pending": {"type": "integer"},
                    },
                },
            },
        },
    },
    "TriggerReport": {
        "type": "object",
        "properties": {
            "kind": KIND,
            "queued": {"type": "integer"},
            "nothing_to_send": {"type": "integer"},
            "already_had_it": {"type": "integer"},
            "left_for_later": {
                "type": "object",
                "description": "Readers whose local send time has not come yet today",
                "properties": {"count": {"type": "integer"}, "why": STRING},
            },
            "failed_to_render": {
                "type": "integer",
                "description": "Rows written as failed: their digest could not be rendered",
            },
            "not_eligible": {
                "type": "array",
                "items": {"type": "object", "properties": {"email": STRING, "reason": STRING}},
            },
        },
    },
    "BounceResult": {
        "type": "object",
        "properties": {
            "outcome": {"type": "string", "enum": [str(o) for o in Outcome]},
            "report_type": {
                "type": "string",
                "enum": ["delivery-status", "feedback-report", "bounce"],
            },
            "matched": {"type": "boolean"},
            "matched_by": {
                "type": ["string", "null"],
                "enum": ["verp", "message-id", None],
            },
            "status": {"type": ["string", "null"]},
            "diagnostic": {"type": ["string", "null"]},
            "suppressed": {"type": "boolean"},
            "repeated": {"type": "boolean"},
        },
    },
    "Standing": {
        "type": "object",
        "properties": {
            "id": STRING,
            "pinned_until": {"type": ["string", "null"], "format": "date-time"},
            "held": {"type": "boolean"},
        },
    },
    "TestSent": {
        "type": "object",
        "properties": {
            "kind": KIND,
            "period": {"type": "string", "format": "date"},
            "to": STRING,
            "subject": STRING,
            "message_id": STRING,
            "articles": {"type": "integer"},
            "reply": {"type": "string", "description": "The mail server's answer"},
        },
    },
    "IngestReport": {
        "type": "object",
        "properties": {
            "added": {"type": "integer"},
            "updated": {"type": "integer"},
            "rejected": {"type": "integer"},
            "errors": {
                "type": "array",
                "items": {"type": "object"},
                "description": "The first 100 rejected items' errors (position, field, problem)",
            },
        },
    },
}


def document(base_url: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "digestd admin API",
            "version": __version__,
            "description": "Send `Authorization: Bearer $DIGESTD_ADMIN_TOKEN` with every request.",
        },
        "servers": [{"url": base_url.rstrip("/") + "/api"}],
        "security": [{"bearer": []}],
        "paths": {**PATHS, **ENGAGEMENT_PATHS},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**SCHEMAS, **ENGAGEMENT_SCHEMAS},
        },
    }


async def serve(request: Request) -> Response:
    return JSONResponse(document(web(request).settings.base_url))
