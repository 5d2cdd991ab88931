"""The signup emails (template family ``confirm``): "please confirm" and "you are already
subscribed". Rendered per message — they are rare, unlike digests — and built with the
same :class:`~digestd.mail.template.MessageTemplate` as the digests, so headers are safe alike.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from email.utils import format_datetime, formataddr

from digestd.config import Settings
from digestd.delivery.transport import Transport
from digestd.mail.composer import Links
from digestd.mail.presentation import Site, names_of
from digestd.mail.render import Renderer
from digestd.mail.template import MessageTemplate, Personal, ascii_address
from digestd.readers.lifecycle import Notice, SignupResult
from digestd.tokens import MAX_AGE, Purpose, Tokens

FREQUENCY_WORDS = {
    "daily": "the daily digest every morning",
    "weekly": "the weekly recap every Sunday",
    "both": "the daily digest every morning and the weekly recap on Sundays",
}


class SignupMailer:
    def __init__(
        self, settings: Settings, tokens: Tokens, transport: Transport, renderer: Renderer
    ) -> None:
        self.settings = settings
        self.links = Links(settings, tokens)
        self.transport = transport
        self.renderer = renderer
        self.site = Site(settings.site_name, settings.base_url, settings.postal_address)
        self.from_header = formataddr((settings.from_name, settings.from_address))

    def message(self, signup: SignupResult, now: datetime) -> bytes:
        assert signup.notice is not None
        links = self.links.for_subscriber(signup.public_id)
        already = signup.notice is Notice.ALREADY
        context = {
            "site": self.site,
            "already": already,
            "heading": "You're already subscribed" if already else "Confirm your subscription",
            "preheader": (
                "Manage your digests or unsubscribe with one click."
                if already
                else "One click and your first digest is on its way."
            ),
            "topics": names_of(list(signup.categories)),
            "frequency": FREQUENCY_WORDS.get(signup.frequency, ""),
            "confirm_url": self.links.url(Purpose.CONFIRM, signup.public_id),
            "expires_days": MAX_AGE[Purpose.CONFIRM].days,
            "footer_reason": (
                f"Someone, hopefully you, asked for {self.site.name} digests at this address. "
                "If it wasn't you, ignore this email: nothing is sent without a confirmation."
            ),
            "links": links,
        }
        rendered = self.renderer.render("confirm", context)
        template = MessageTemplate.build(
            rendered,
            from_header=self.from_header,
            headers=[("List-Id", self.settings.list_id), ("Auto-Submitted", "auto-generated")],
        )
        domain = self.settings.from_domain
        return template.compose(
            Personal(
                to=ascii_address(signup.email),
                message_id=f"<signup.{secrets.token_hex(12)}@{domain}>",
                date=format_datetime(now),
                links=links,
                unsubscribe_mailto=f"{self.links.mailto}?subject=unsubscribe",
            )
        )

    async def send(self, signup: SignupResult, now: datetime) -> str:
        """Raises :class:`~digestd.errors.DeliveryError` when the mail server refuses."""
        data = self.message(signup, now)
        return await self.transport.send(
            f"bounces@{self.settings.from_domain}", ascii_address(signup.email), data
        )
