"""axe-core, Deque's rules engine for accessibility, run inside a Playwright page.

The script is the ``axe.min.js`` that the axe-playwright-python wheel ships (the test extra
installs it), read from the installed package: nothing is fetched at test time and no copy
of axe lives in this repository. The wheel's own runner is not used: it is untyped and
returns every node axe passed as well, where a test wants only what failed, in one line each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files

from playwright.sync_api import Page

AXE_JS = files("axe_playwright_python").joinpath("axe.min.js").read_text(encoding="utf-8")
IMPACTS = ("minor", "moderate", "serious", "critical")
# Off by default in axe 4.12 but part of WCAG 2.2 AA (2.5.8, targets of 24 px or spaced out):
# the digests and pages are read on phones.
TURNED_ON = ("target-size",)

# Each violation as rule, impact, help text and the CSS paths of the elements that fail.
RUN = """options => axe.run(document, options).then(found => found.violations.map(v => ({
  rule: v.id, impact: v.impact || "minor", help: v.help,
  targets: v.nodes.map(n => n.target.join(" ")),
})))"""


@dataclass(frozen=True)
class Violation:
    where: str  # the page or email, and the colour scheme and width it was seen at
    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.targets[:3]) + (" …" if len(self.targets) > 3 else "")
        return f"{self.where}: {self.rule} ({self.impact}) {self.help} [{shown}]"


def at_least(found: Iterable[Violation], impact: str) -> list[Violation]:
    """The violations whose impact is ``impact`` or worse."""
    floor = IMPACTS.index(impact)
    return [v for v in found if IMPACTS.index(v.impact) >= floor]


def audit(page: Page, where: str, disabled: Iterable[str] = ()) -> list[Violation]:
    """What axe finds wrong with the page as it is now: axe's default rules and
    :data:`TURNED_ON`, but not ``disabled``."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.evaluate(AXE_JS)  # evaluated by the DevTools protocol: no page CSP applies
    options = {
        "resultTypes": ["violations"],
        "rules": {
            **{rule: {"enabled": True} for rule in TURNED_ON},
            **{rule: {"enabled": False} for rule in disabled},
        },
    }
    found: list[dict[str, object]] = page.evaluate(RUN, options)
    return [
        Violation(
            where,
            str(v["rule"]),
            str(v["impact"]),
            str(v["help"]),
            tuple(str(t) for t in v["targets"]),  # type: ignore[attr-defined]
        )
        for v in found
    ]
