"""The signup emails (template family ``confirm``): "please confirm", "welcome back, confirm
to resume", "you are already subscribed" (maybe with "add these topics") and "your fresh
preferences link"; and after confirming, the welcome (family ``welcome``): the first
digests, exactly when, and the latest public editions of the reader's topics. Rendered per
message — they are rare, unlike digests — and built with the same
:class:`~digestd.mail.template.MessageTemplate` as the digests, so headers are safe alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from digestd.config import Settings
from digestd.delivery.transport import Transport
from digestd.mail.composer import Composer
from digestd.mail.presentation import Site, names_of
from digestd.mail.render import Renderer
from digestd.mail.template import MessageTemplate
from digestd.mail.wire import ascii_address
from digestd.readers.signups import Notice, SignupResult
from digestd.readers.subscribers import Preferences, frequency_name
from digestd.readers.upcoming import arrival_day
from digestd.tokens import MAX_AGE, Purpose
from digestd.web.shelves import Shelved
from digestd.web.zones import same_zone

FREQUENCY_WORDS = {
    "daily": "the daily digest every morning",
    "weekly": "the weekly recap every Sunday",
    "both": "the daily digest every morning and the weekly recap on Sundays",
}


HEADINGS = {
    Notice.CONFIRM: "Confirm your subscription",
    Notice.WELCOME_BACK: "Confirm to resume your digests",
    Notice.ALREADY: "You're already subscribed",
    Notice.MANAGE_LINK: "Your preferences link",
    Notice.WELCOME: "You're subscribed",
}
PREHEADERS = {
    Notice.CONFIRM: "One click and your first digest is on its way.",
    Notice.WELCOME_BACK: "One click and your digests start again.",
    Notice.ALREADY: "Manage your digests or unsubscribe with one click.",
    Notice.MANAGE_LINK: "Change your topics, frequency or timezone, or stop your digests.",
    Notice.WELCOME: "",  # says when the first digest comes: see _welcome
}


# What an already subscribed reader asked for besides what they get: (what they get, what
# they asked for) by frequency name.
_OTHER_FREQUENCY = {
    ("weekly", "both"): "the daily digest as well",
    ("daily", "both"): "the weekly recap as well",
    ("weekly", "daily"): "the daily digest instead of the weekly recap",
    ("daily", "weekly"): "the weekly recap instead of the daily digest",
    ("both", "daily"): "the daily digest only",
    ("both", "weekly"): "the weekly recap only",
}


def zone_place(zone: str) -> str:
    """ "Los Angeles" for America/Los_Angeles: the place a reader knows their zone by."""
    return zone.rpartition("/")[2].replace("_", " ")


def also_asked(asked: Preferences, current: Preferences) -> str:
    """ "the daily digest as well and the Los Angeles time zone": the frequency and zone a
    signup asked for where they differ from the reader's, which the signup leaves alone."""
    wanted = _OTHER_FREQUENCY.get((frequency_name(current), frequency_name(asked)))
    parts = [wanted] if wanted else []
    if not same_zone(asked.timezone, current.timezone):
        parts.append(f"the {zone_place(asked.timezone)} time zone ({asked.timezone})")
    return " and ".join(parts)


class SignupMailer:
    def __init__(
        self, settings: Settings, composer: Composer, transport: Transport, renderer: Renderer
    ) -> None:
        self.settings = settings
        self.composer = composer
        self.links = composer.links
        self.tokens = composer.tokens
        self.transport = transport
        self.renderer = renderer
        self.site = Site(settings.site_name, settings.base_url, settings.postal_address)

    def message(
        self, signup: SignupResult, now: datetime, editions: Sequence[Shelved] = ()
    ) -> bytes:
        """``editions``: a welcome's latest public editions of the reader's topics."""
        assert signup.notice is not None
        links = self.links.for_subscriber(signup.public_id)
        request, link = signup.request, signup.link
        context = {
            "site": self.site,
            "notice": str(signup.notice),
            "heading": HEADINGS[signup.notice],
            "preheader": PREHEADERS[signup.notice],
            "topics": names_of(list(request.prefs.categories)) if request else "",
            "new_topics": names_of(list(signup.new_topics)) if signup.new_topics else "",
            "also_asked": also_asked(request.prefs, signup.current)
            if request and signup.current
            else "",
            "frequency": FREQUENCY_WORDS.get(frequency_name(request.prefs), "") if request else "",
            # Stated, since following the link applies it: a stranger may have asked for a
            # signup in another zone, and "every morning" is the reader's morning.
            "zone": request.prefs.timezone if request else "",
            "confirm_url": self._confirm_url(link.fields()) if link else "",
            "expires_days": MAX_AGE[Purpose.CONFIRM].days,
            "manage_days": MAX_AGE[Purpose.PREFERENCES].days,
            "footer_reason": self._reason(signup.notice),
            "links": links,
        }
        family = "confirm"
        if signup.notice is Notice.WELCOME:
            family = "welcome"
            context.update(self._welcome(signup, editions, now))
        rendered = self.renderer.render(family, context)
        template = MessageTemplate.build(
            rendered,
            from_header=self.composer.from_header,
            headers=[("List-Id", self.settings.list_id), ("Auto-Submitted", "auto-generated")],
        )
        return self.composer.notice(
            template,
            message_id=self.composer.notice_id("signup"),
            email=signup.email,
            public_id=signup.public_id,
            now=now,
        )

    def _welcome(
        self, signup: SignupResult, editions: Sequence[Shelved], now: datetime
    ) -> dict[str, object]:
        """Composed at ``now``, which says whether the first digest comes today or
        tomorrow by the reader's date, as the page after confirming said at the same click."""
        first, *then = signup.upcoming
        when = first.when_from(now)
        return {
            "first": {
                "name": first.name,
                "when": when,
                "day": arrival_day(first.at, first.zone, now),
            },
            "then": [{"name": u.name, "when": u.when_from(now)} for u in then],
            "preheader": f"Your first {first.name} arrives {when}.",
            "editions": [{"title": e.title, "url": f"{self.links.base}{e.path}"} for e in editions],
            "archive_url": f"{self.links.base}/archive",
        }

    def _reason(self, notice: Notice) -> str:
        if notice is Notice.WELCOME:
            return (
                f"You're getting this email because you confirmed your {self.site.name} "
                "subscription at this address."
            )
        asked = (
            "a fresh link to manage your digests"
            if notice is Notice.MANAGE_LINK
            else f"{self.site.name} digests at this address"
        )
        return (
            f"Someone, hopefully you, asked for {asked}. If it wasn't you, ignore this "
            "email: nothing changes unless you follow its link."
        )

    def _confirm_url(self, fields: list[str]) -> str:
        return f"{self.links.base}/{Purpose.CONFIRM}/{self.tokens.make(Purpose.CONFIRM, fields)}"

    async def send(
        self, signup: SignupResult, now: datetime, editions: Sequence[Shelved] = ()
    ) -> str:
        """Raises :class:`~digestd.errors.DeliveryError` when the mail server refuses."""
        data = self.message(signup, now, editions)
        return await self.transport.send(
            self.composer.reader_envelope_from(signup.public_id),
            ascii_address(signup.email),
            data,
        )
