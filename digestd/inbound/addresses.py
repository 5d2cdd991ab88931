"""Which recipients digestd's LMTP listener serves, all at the From address's domain:

- ``bounces+<delivery id>.<signature>``: the VERP envelope sender of each digest;
- ``bounces+r<public id>.<signature>``: that of a reader's other mail (confirmation,
  welcome, sunset): its bounce names the reader;
- ``bounces``: the envelope sender of send-tests (their bounces name nobody);
- ``complaints``: where mailbox providers' feedback loops send ARF reports;
- ``unsubscribe+<public id>.<signature>``: a reader's own unsubscribe address, the
  ``mailto:`` of their ``List-Unsubscribe`` header (:meth:`digestd.tokens.Tokens.mailto_tag`);
- ``unsubscribe``: the shared address of emails older digestd sent. It names nobody (the
  sender can be anyone), so the sender's address is emailed a link to stop their digests.

Signatures are checked here, at RCPT: an address digestd did not make is refused before
any content is taken.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from digestd.readers.bounces import address_forms
from digestd.tokens import BadToken, Tokens


class Mailbox(enum.StrEnum):
    BOUNCES = "bounces"
    COMPLAINTS = "complaints"
    UNSUBSCRIBE = "unsubscribe"


@dataclass(frozen=True)
class Served:
    mailbox: Mailbox
    public_id: str | None = None  # whom an unsubscribe address is for


def served(address: str, domain: str, tokens: Tokens) -> Served | None:
    """What ``address`` is to digestd, or None when it is not an address digestd made."""
    local, at, their_domain = address.strip().strip("<>").rpartition("@")
    if not at or not address_forms(f"x@{their_domain}") & address_forms(f"x@{domain}"):
        return None
    box, plus, tag = local.partition("+")
    box = box.lower()
    try:
        if box == Mailbox.BOUNCES:
            if plus:
                tokens.read_bounce_target(tag)  # only checked: the report is matched later
            return Served(Mailbox.BOUNCES)
        if box == Mailbox.COMPLAINTS and not plus:
            return Served(Mailbox.COMPLAINTS)
        if box == Mailbox.UNSUBSCRIBE:
            # Without a tag: the shared address older digestd wrote in List-Unsubscribe.
            return Served(Mailbox.UNSUBSCRIBE, tokens.read_mailto_tag(tag) if plus else None)
    except BadToken:
        return None
    return None
