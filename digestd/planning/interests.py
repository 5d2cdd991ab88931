"""Each reader's clicks as the planner reads them (``DIGESTD_TRACK_CLICKS=reader``): the
stories they opened per category and per source, made into boosts by
:func:`digestd.planning.learning.profile`. One grouped query per batch of readers, through
the (subscriber, clicked_at) index."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from digestd.bulk import among
from digestd.models import Click
from digestd.planning.learning import LEARN_DAYS, Profile, profile
from digestd.planning.selection import source_key


def profiles(
    session: Session, categories: dict[int, list[str]], now: datetime
) -> dict[int, Profile]:
    """The boosts of each reader in ``categories`` (reader id -> the categories they follow)
    who has any; clicks in categories they no longer follow teach nothing."""
    by_category: dict[int, Counter[str]] = defaultdict(Counter)
    by_source: dict[int, Counter[str]] = defaultdict(Counter)
    rows = session.execute(
        # Each story once: the first click of each email on it (never a scanner's burst),
        # and a story opened in several emails (pinned, or in the daily and the recap)
        # counted once across them.
        select(
            Click.subscriber_id,
            Click.category,
            Click.source,
            func.count(func.distinct(Click.article_id)),
        )
        .where(
            among(session, Click.subscriber_id, list(categories)),
            Click.clicked_at >= now - timedelta(days=LEARN_DAYS),
            Click.first_of_article.is_(True),
        )
        .group_by(Click.subscriber_id, Click.category, Click.source)
    )
    for reader, category, source, n in rows:
        if reader is None or category not in categories[reader]:
            continue
        by_category[reader][category] += int(n)
        if source:
            by_source[reader][source_key(source)] += int(n)
    found = {
        reader: profile(by_category[reader], by_source[reader], categories[reader])
        for reader in by_category
    }
    return {reader: boosts for reader, boosts in found.items() if boosts}
