"""The answers a sunset email offers (:mod:`digestd.readers.sunset`):
``/engage/{token}?choice=keep|weekly|resume``. GET shows what the choice does and a button
(mail scanners follow links, so nothing changes); POST, with the page's CSRF token, acts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digestd.readers.subscribers import by_public_id
from digestd.readers.sunset import Answer, Answered, answer
from digestd.tokens import BadToken, ExpiredToken, Purpose
from digestd.web.body import read_input
from digestd.web.context import Web, web
from digestd.web.csrf import FIELD as CSRF_FIELD
from digestd.web.errors import WebError
from digestd.web.reader_pages import GONE

_INVALID = (
    "This link is not valid. It may have been cut short by your email program: open it "
    "from the email again."
)
_EXPIRED = (
    "This link has expired. “Manage preferences” at the foot of any digest changes how "
    "often you get them, or stops them."
)
QUESTIONS = {
    Answer.KEEP: ("Keep your digests?", "Your digests keep coming as they are.", "Keep them"),
    Answer.WEEKLY: (
        "Only the weekly recap?",
        "You'll get only the weekly recap, on Sundays; no more daily digest.",
        "Weekly recap only",
    ),
    Answer.RESUME: ("Resume your digests?", "Your digests start again.", "Resume my digests"),
}
# The page's title once the choice is made: it says what was done (a tab titled "Done"
# does not, WCAG 2.4.2).
DONE = {
    Answer.KEEP: "Your digests keep coming",
    Answer.WEEKLY: "Weekly recap only",
    Answer.RESUME: "Your digests start again",
}


def _link(w: Web, request: Request) -> tuple[str, Answer]:
    try:
        public_id = w.tokens.read(Purpose.ENGAGE, request.path_params["token"])
    except ExpiredToken as exc:
        raise WebError(400, _EXPIRED, title="Expired link") from exc
    except BadToken as exc:
        raise WebError(400, _INVALID, title="Invalid link") from exc
    try:
        return public_id, Answer(request.query_params.get("choice", ""))
    except ValueError as exc:
        choices = ", ".join(Answer)
        raise WebError(400, f"choice: one of {choices}", field="choice") from exc


def _exists(w: Web, public_id: str) -> bool:
    with w.sessions() as session:
        return by_public_id(session, public_id) is not None


def _answer(w: Web, public_id: str, choice: Answer) -> Answered | None:
    with w.sessions.begin() as session:
        return answer(session, public_id, choice, w.clock(), w.schedule)


async def engage_page(request: Request) -> Response:
    w = web(request)
    public_id, choice = _link(w, request)
    if not await w.db(_exists, w, public_id):
        raise GONE
    title, effect, button = QUESTIONS[choice]
    csrf = w.csrf.session(request)
    page = w.pages.message(
        title,
        effect,
        form={
            "action": f"{request.url.path}?choice={choice}",
            "fields": {CSRF_FIELD: csrf.token("engage", f"{public_id}:{choice}")},
            "button": button,
        },
    )
    return csrf.attach(request, page)


async def engage_post(request: Request) -> Response:
    w = web(request)
    public_id, choice = _link(w, request)
    data = await read_input(request, allow_json=False)
    w.csrf.check(request, data.text(CSRF_FIELD, 500), "engage", f"{public_id}:{choice}")
    done = await w.db(_answer, w, public_id, choice)
    if done is None:
        raise GONE
    if not done.done:
        return w.pages.message(
            "Nothing to change",
            f"This address gets no {w.settings.site_name} digests at the moment. A pause "
            "ends from the preferences page (the link at the foot of every digest); after "
            "an unsubscribe, the signup page starts them again.",
        )
    frequency = (
        "the daily digest and the weekly recap"
        if done.wants_daily and done.wants_weekly
        else "the daily digest"
        if done.wants_daily
        else "the weekly recap"
    )
    return w.pages.message(DONE[choice], f"Thanks! You'll get {frequency}.")


ROUTES = [
    Route("/engage/{token}", engage_page, methods=["GET"]),
    Route("/engage/{token}", engage_post, methods=["POST"]),
]
