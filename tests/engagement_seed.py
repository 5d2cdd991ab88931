"""A week of dailies with clicks, written straight into the real (migrated) database, for the
pages that show engagement: readers, one edition a day with a few digests of ten stories,
queue rows sent, and settled clicks as the click route and its settling would leave them
(a seeded random draw: the lead draws most, then fewer down the list; a scanner burst now
and then)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from digestd.db import insert_rows
from digestd.mail.layout import Entry, Layout, Section
from digestd.models import Article, Click, DeliveryStatus, Digest, DigestLink, Edition
from tests.admin_seed import delivery, edition, reader

TITLES = [
    "OpenAI ships a cheaper reasoning model for agents",
    "Boston Dynamics' Atlas learns to sort parcels on its own",
    "EU settles the AI Act's rules for general-purpose models",
    "Nvidia's next GPU doubles memory bandwidth",
    "A robot arm that learns a task from one video",
    "Anthropic publishes its model's interpretability map",
    "Warehouse robots cut picking errors by a third",
    "Meta's internal memo signals an AI comeback",
    "Figure raises $1.5B for humanoid robots",
    "Google's Gemini runs on-device on mid-range phones",
    "Amazon tests drones that deliver in 30 minutes",
    "A startup makes robot hands from 3D-printed tendons",
]
SOURCES = ["The Verge", "THE DECODER", "IEEE Spectrum", "TechCrunch", "Ars Technica"]


def _category(title: str) -> str:
    return "robotics" if "obot" in title or "rone" in title else "ai"


def week_of_clicks(session: Session, now: datetime, readers: int = 240) -> None:
    rng = random.Random(11)
    people = [
        reader(session, f"r{i}@example.com", categories="ai,robotics", created_at=now)
        for i in range(readers)
    ]
    for back in range(6, -1, -1):
        day = (now - timedelta(days=back)).replace(hour=7, minute=0, second=0, microsecond=0)
        issue = edition(session, "daily", day.date().isoformat(), day)
        stories = _stories(session, day, back)
        digest = _digest(session, issue, day, stories)
        clicks: list[dict[str, object]] = []
        appeal = [rng.uniform(0.6, 1.6) for _ in stories]  # some stories sell better
        for k, person in enumerate(people):
            row = delivery(session, person, issue, DeliveryStatus.SENT, day, day)
            row.digest_id = digest.id
            clicks += _reads(rng, issue, day, stories, appeal, k)
            if k % 37 == 0:  # a mail filter opening every link on delivery
                clicks += _scanner_burst(issue, day, stories)
        session.flush()
        insert_rows(session, Click.__table__, clicks)


def _stories(session: Session, day: datetime, back: int) -> list[Article]:
    """The day's ten stories, the list shifted by a day's place in the week."""
    stories = []
    for n, title in enumerate(TITLES[back % 3 : back % 3 + 10]):
        story = Article(
            id=f"{day:%m%d}-{n}",
            url=f"https://news.example.com/{day:%Y/%m/%d}/{n}",
            title=title,
            source=SOURCES[(n + back) % len(SOURCES)],
            published_at=day - timedelta(hours=n + 1),
        )
        session.add(story)
        stories.append(story)
    return stories


def _digest(session: Session, issue: Edition, day: datetime, stories: list[Article]) -> Digest:
    """The edition's one digest: the first story the lead, and its links."""
    entries = [Entry(story.id, _category(story.title)) for story in stories]
    layout = Layout(
        ("ai", "robotics"),
        (Section(None, (entries[0],), lead=True), Section(None, tuple(entries[1:]))),
    )
    digest = Digest(edition_id=issue.id, content_key="k", layout=layout.to_json(), created_at=day)
    session.add(digest)
    session.flush()
    insert_rows(
        session,
        DigestLink.__table__,
        [
            {
                "digest_id": digest.id,
                "position": n + 1,
                "article_id": s.id,
                "category": _category(s.title),
                "source": s.source,
            }
            for n, s in enumerate(stories)
        ],
    )
    return digest


def _reads(
    rng: random.Random,
    issue: Edition,
    day: datetime,
    stories: list[Article],
    appeal: list[float],
    k: int,
) -> list[dict[str, object]]:
    """The clicks of the ``k``th reader on the day's stories."""
    clicks: list[dict[str, object]] = []
    first = True
    for n, story in enumerate(stories):
        # the lead to about one reader in five, fewer down the list
        if rng.random() > 0.2 * appeal[n] / (1 + 0.4 * n):
            continue
        at = day + timedelta(minutes=20 + k % 300, seconds=n * 40)
        link = {
            "article_id": story.id,
            "position": n + 1,
            "category": _category(story.title),
        }
        clicks.append(
            {
                "edition_id": issue.id,
                **link,
                "source": story.source,
                "clicked_at": at,
                "scanner": False,
                "first_of_article": True,
                "first_of_edition": first,
            }
        )
        first = False
    return clicks


def _scanner_burst(
    issue: Edition, day: datetime, stories: list[Article]
) -> list[dict[str, object]]:
    return [
        {
            "edition_id": issue.id,
            "article_id": story.id,
            "position": n + 1,
            "category": _category(story.title),
            "source": story.source,
            "clicked_at": day + timedelta(seconds=n),
            "scanner": True,
            "first_of_article": False,
            "first_of_edition": False,
        }
        for n, story in enumerate(stories)
    ]
