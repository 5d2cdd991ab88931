"""The site's fixed category list (SPEC §2): slug → display name, in the site's order."""

from __future__ import annotations

from collections.abc import Iterable

from digestd.errors import ValidationError

CATEGORIES: dict[str, str] = {
    "ai": "AI",
    "autonomy": "Autonomy",
    "b2b-growth": "B2B Growth",
    "big-data": "Big Data",
    "biotech": "BioTech",
    "climatetech": "ClimateTech",
    "consumer-tech": "Consumer Tech",
    "crypto": "Crypto",
    "cybersecurity": "Cybersecurity",
    "devops": "DevOps",
    "digital-marketing": "Digital Marketing",
    "ecommerce": "E-commerce",
    "edtech": "EdTech",
    "enterprise": "Enterprise",
    "fintech": "FinTech",
    "govtech": "GovTech",
    "hardware": "Hardware",
    "healthtech": "HealthTech",
    "hrtech": "HRTech",
    "legaltech": "LegalTech",
    "nanotech": "NanoTech",
    "proptech": "PropTech",
    "quantum": "Quantum",
    "robotics": "Robotics",
    "saas": "SaaS",
    "spacetech": "SpaceTech",
}
ALL = "all"
ALL_NAME = "All Technology"


def parse_categories(
    value: str | Iterable[str], field: str = "categories", how: str = ""
) -> list[str]:
    """Slugs from ``"ai,robotics"`` or a list; ``all`` expands to every category.

    Unknown slugs are an error naming them: silently dropping a reader's choice would
    send them a digest they did not ask for. ``how`` (how to write several, where that is
    not obvious) goes into the error before the known slugs.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    slugs: list[str] = []
    for item in items:
        if not isinstance(item, str):
            # Its type, not its value: a nested list's repr can be megabytes.
            raise ValidationError(field, f"expected category slugs, got a {type(item).__name__}")
        slug = item.strip().lower()
        if slug:
            slugs.append(slug)
    if not slugs:
        raise ValidationError(field, "choose at least one category" + (f"; {how}" if how else ""))
    if ALL in slugs:
        return list(CATEGORIES)
    unknown = [s for s in slugs if s not in CATEGORIES]
    if unknown:
        shown = ", ".join(repr(s[:40]) for s in unknown[:5])
        said = f"unknown category {shown}; " + (f"{how}; " if how else "")
        raise ValidationError(field, f"{said}known: {', '.join(CATEGORIES)}")
    return [s for s in CATEGORIES if s in set(slugs)]  # site order, no duplicates
