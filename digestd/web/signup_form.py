"""The signup form: reading what was sent, field by field, and showing the page.

Every field is read and checked on its own, so one answer names every problem, each next
to its field, and the page comes back with everything as it was typed (no dead end, an
empty address included). What was typed is shown again escaped, never trusted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from digestd.content.categories import ALL, ALL_NAME, CATEGORIES, parse_categories
from digestd.errors import ValidationError
from digestd.readers.signups import CONSENT_TEXT
from digestd.readers.subscribers import (
    FREQUENCIES,
    RENAMED_ZONES,
    Preferences,
    normalise_email,
    parse_frequency,
    parse_timezone,
)
from digestd.web.body import Input
from digestd.web.context import Web
from digestd.web.errors import WebError
from digestd.web.zones import find_zone, zone_options

HONEYPOT = "website"  # hidden from people; bots fill every field they find
LABELS = {
    "email": "Email",
    "categories": "Topics",
    "frequency": "How often",
    "timezone": "Timezone",
    "source": "Source",
    "form": "Form",
}
ORDER = ("email", "categories", "frequency", "timezone", "source", "form")
T = TypeVar("T")


@dataclass
class SignupForm:
    """What the page shows: the values as sent, and a problem per field."""

    email: str = ""
    categories: list[str] = field(default_factory=list)
    frequency: str = "daily"
    timezone: str = ""
    source: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    detect_zone: bool = False  # a first visit: the page's script fills in the browser's zone

    @property
    def first_error(self) -> tuple[str, str]:
        name = min(self.errors, key=ORDER.index)
        return name, self.errors[name]

    def json_error(self) -> WebError:
        name, problem = self.first_error
        return WebError(400, f"{LABELS[name]}: {problem}", field=name)


def _raw(data: Input, name: str) -> str:
    value = data.data.get(name)
    if isinstance(value, list):
        value = value[-1] if value else ""
    return value if isinstance(value, str) else ""


def _raw_list(data: Input, name: str) -> list[str]:
    value = data.data.get(name)
    values = value if isinstance(value, list) else [value]
    return [part.strip().lower() for v in values if isinstance(v, str) for part in v.split(",")][
        :100
    ]


def _check(form: SignupForm, name: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except WebError as exc:
        form.errors[name] = _sentence(exc.message)
    except ValidationError as exc:
        form.errors[name] = _sentence(exc.problem)
    return None


def _sentence(problem: str) -> str:
    problem = problem.strip()
    return problem[:1].upper() + problem[1:] + ("" if problem.endswith(".") else ".")


def read_signup(data: Input, default_zone: str) -> tuple[SignupForm, str, Preferences | None]:
    """The form as sent, the normalised address and the preferences (None when
    ``form.errors`` says why)."""
    form = SignupForm(
        email=_raw(data, "email"),
        categories=_raw_list(data, "categories"),
        frequency=_raw(data, "frequency"),
        timezone=_raw(data, "timezone"),
        source=_raw(data, "source"),
    )
    email = _check(form, "email", lambda: _email(data))
    categories = _check(form, "categories", lambda: parse_categories(data.items("categories", 40)))
    frequency = _check(
        form, "frequency", lambda: parse_frequency(data.text("frequency", 10, required=True))
    )
    zone = _check(
        form,
        "timezone",
        lambda: parse_timezone(find_zone(data.text("timezone", 64)), default_zone),
    )
    _check(form, "source", lambda: data.text("source", 1000))
    if form.errors or email is None or categories is None or frequency is None or zone is None:
        return form, "", None
    return form, email, Preferences(tuple(categories), *frequency, zone)


def _email(data: Input) -> str:
    raw = data.text("email", 320)
    if not raw:
        raise ValidationError("email", "enter your email address, e.g. you@example.com")
    return normalise_email(raw)


def prefilled(query: dict[str, str], default_zone: str) -> SignupForm:
    """The page a signup link opens: ``?categories=ai,robotics&frequency=weekly``."""
    form = SignupForm(timezone=default_zone, detect_zone=True)
    raw = query.get("categories", "")
    if raw:
        form.categories = [c.strip().lower() for c in raw.split(",")][:100]
        _check(form, "categories", lambda: parse_categories(raw))
    frequency = (query.get("frequency") or "daily").strip().lower()
    form.frequency = frequency
    if frequency not in FREQUENCIES:
        form.errors["frequency"] = f"Must be daily, weekly or both, got {frequency[:20]!r}."
    return form


def topics_summary(chosen: list[str]) -> str:
    """ "AI, Robotics"; "All Technology" when every category is chosen."""
    picked = set(CATEGORIES) if ALL in chosen else set(chosen)
    if picked >= set(CATEGORIES):
        return ALL_NAME
    return ", ".join(name for slug, name in CATEGORIES.items() if slug in picked)


def render_form(request: Request, w: Web, form: SignupForm, status: int) -> Response:
    csrf = w.csrf.session(request)
    summary = topics_summary(form.categories)
    context: dict[str, Any] = {
        "form": form,
        "errors": defaultdict(str, form.errors),  # a field without a problem: ""
        "error_names": [LABELS[name] for name in ORDER if name in form.errors],
        "categories": CATEGORIES,
        "all_name": ALL_NAME,
        "all_chosen": ALL in form.categories or set(form.categories) >= set(CATEGORIES),
        "topics_summary": summary,
        "topics_open": not summary or "categories" in form.errors,
        "consent_text": CONSENT_TEXT,
        "csrf": csrf.token("subscribe", "-"),
        "honeypot": HONEYPOT,
        "renamed_zones": RENAMED_ZONES,
        "zones": zone_options(w.clock()),
    }
    response = w.pages.render("subscribe.html", context, status)
    return csrf.attach(request, response)
