"""Muting a category: the page behind the "mute {Category}" links of a digest,
``/mute/{token}?category={slug}``.

The token is signed for one reader (one token per email, however many categories it
offers); the link can do one thing: take one of that reader's categories away, when they
follow others. GET shows what it would do and a button (mail scanners follow links, so
nothing changes); POST, with the page's CSRF token, acts. A reader's last category is never
muted: the page offers their unsubscribe page instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.content.categories import CATEGORIES
from digestd.mail.presentation import names_of
from digestd.readers.muting import Muting, mute, muting, reader_to_change
from digestd.readers.subscribers import by_public_id
from digestd.tokens import BadToken, ExpiredToken, Purpose
from digestd.web.body import read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.reader_pages import GONE, someone

_INVALID = (
    "This link is not valid. It may have been cut short by your email program: "
    "open it from the email again."
)
_NO_CATEGORY = (
    "This link does not say which topic to mute. Open it from the email again: each topic "
    "has its own link."
)
_ELSEWHERE = "“Manage preferences” at the foot of any digest"


@dataclass(frozen=True)
class MuteLink:
    public_id: str
    category: str

    @property
    def name(self) -> str:
        return CATEGORIES[self.category]

    @property
    def form(self) -> str:
        """What the page's CSRF token is for: this reader and this category."""
        return f"{self.public_id}:{self.category}"


def _link(w: Web, request: Request) -> MuteLink:
    """The reader and category a link names. An expired but authentic one still works:
    like an unsubscribe link, it can only ever mean less mail."""
    try:
        public_id = w.tokens.read(Purpose.MUTE, request.path_params["token"])
    except ExpiredToken as exc:
        if exc.payload is None:
            raise WebError(400, _INVALID, title="Invalid link") from exc
        public_id = exc.payload
    except BadToken as exc:
        raise WebError(400, _INVALID, title="Invalid link") from exc
    category = request.query_params.get("category", "")
    if category not in CATEGORIES:
        raise WebError(400, _NO_CATEGORY, title="Invalid link", field="category")
    return MuteLink(someone(public_id), category)


def _topics(categories: list[str]) -> str:
    return names_of(categories) if categories else "no topics"


@dataclass(frozen=True)
class Outcome:
    muting: Muting
    categories: list[str]  # the reader's, after the change if there was one


def _look(w: Web, link: MuteLink) -> Outcome | None:
    with w.sessions() as session:
        subscriber = by_public_id(session, link.public_id)
        if subscriber is None:
            return None
        return Outcome(muting(subscriber, link.category), subscriber.category_slugs)


def _mute(w: Web, link: MuteLink) -> Outcome | None:
    with w.sessions.begin() as session:
        subscriber = reader_to_change(session, link.public_id)
        if subscriber is None:
            return None
        outcome = mute(session, subscriber, link.category)
        return Outcome(outcome, subscriber.category_slugs)


async def mute_page(request: Request) -> Response:
    w = web(request)
    link = _link(w, request)
    outcome = await w.db(_look, w, link)
    if outcome is None:
        raise GONE
    if outcome.muting is not Muting.MUTED:
        return _settled(request, w, link, outcome)
    csrf = w.csrf.session(request)
    others = [c for c in outcome.categories if c != link.category]
    page = w.pages.message(
        f"Mute {link.name}?",
        f"Your digests will leave out {link.name} stories. You'll keep getting {_topics(others)}.",
        form={
            "action": f"{request.url.path}?category={link.category}",
            "fields": {CSRF_FIELD: csrf.token("mute", link.form)},
            "button": f"Mute {link.name}",
        },
    )
    return csrf.attach(request, page)


async def mute_post(request: Request) -> Response:
    w = web(request)
    link = _link(w, request)
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "mute", link.form)
    outcome = await w.db(_mute, w, link)
    if outcome is None:
        raise GONE
    if outcome.muting is not Muting.MUTED:
        return _settled(request, w, link, outcome, acting=True)
    return w.pages.message(
        f"{link.name} is muted",
        f"Your digests now cover {_topics(outcome.categories)}. Changed your mind? Add "
        f"{link.name} back from your preferences.",
        action_url=_preferences(w, link),
        action_label="Manage preferences",
    )


def _preferences(w: Web, link: MuteLink) -> str:
    """A way on from a muting's answer: the reader's preferences, by a fresh link."""
    return f"/preferences/{w.tokens.make(Purpose.PREFERENCES, link.public_id)}"


def _settled(
    request: Request, w: Web, link: MuteLink, outcome: Outcome, *, acting: bool = False
) -> Response:
    """The answer when there is nothing to mute, or muting is refused."""
    if outcome.muting is Muting.LAST_ONE:
        unsubscribe = w.tokens.make(Purpose.UNSUBSCRIBE, link.public_id)
        return w.pages.message(
            f"{link.name} is your only topic",
            f"Muting it would stop your digests, so it stays. You can unsubscribe instead, "
            f"or pause your digests or pick other topics from {_ELSEWHERE}.",
            409 if acting else 200,
            action_url=f"/unsubscribe/{unsubscribe}",
            action_label="Unsubscribe instead",
        )
    if outcome.muting is Muting.NOT_FOLLOWED:
        return w.pages.message(
            f"{link.name} is muted",
            f"Your digests leave out {link.name} stories already; they cover "
            f"{_topics(outcome.categories)}.",
            action_url=_preferences(w, link),
            action_label="Manage preferences",
        )
    return w.pages.message(
        "Nothing to mute",
        f"This address gets no {w.settings.site_name} digests at the moment, so there is "
        "nothing to change.",
    )


ROUTES = [
    Route("/mute/{token}", mute_page, methods=["GET"]),
    Route("/mute/{token}", mute_post, methods=["POST"]),
]
