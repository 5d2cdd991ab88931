"""The subscriber CSV opened in a spreadsheet runs nothing (OWASP CSV injection), and the
same file imported back gives the same addresses: both directions, CLI and HTTP."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from digestd.models import Subscriber, SubscriberCategory
from digestd.readers.spreadsheet import FORMULA_STARTS, neutralise, restore
from tests.admin_seed import AUTH
from tests.conftest import WebRig
from tests.helpers import run_cli

# Valid addresses (RFC 5322 atext) that a spreadsheet would read as formulas, or that
# start with the quote itself.
HOSTILE = {
    "=cmd|calc@example.com": "'=cmd|calc@example.com",
    "+1@example.com": "'+1@example.com",
    "-2+3@example.com": "'-2+3@example.com",
    "'=x@example.com": "''=x@example.com",
    "'plain@example.com": "''plain@example.com",
    "ann@example.com": "ann@example.com",
}


def _emails(web: WebRig) -> set[str]:
    with web.service.sessions() as session:
        return set(session.scalars(select(Subscriber.email)))


def test_export_neutralises_formulas_and_imports_back_unchanged(
    web: WebRig,
    web_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"  # written as the export writes cells: neutralised
    rows = "".join(f"{cell},ai,daily,UTC\n" for cell in HOSTILE.values())
    source.write_text("email,categories,frequency,timezone\n" + rows)
    assert run_cli(monkeypatch, web_env, "subscribers", "import", str(source)) == 0
    assert _emails(web) == set(HOSTILE)
    capsys.readouterr()

    assert run_cli(monkeypatch, web_env, "subscribers", "export") == 0
    from_cli = capsys.readouterr().out
    from_api = web.client.get("/api/subscribers/export", headers=AUTH).text
    assert from_api == from_cli  # one writer for both
    table = list(csv.reader(io.StringIO(from_cli)))[1:]
    assert {row[0] for row in table} == set(HOSTILE.values())
    assert not any(cell.startswith(FORMULA_STARTS) for row in table for cell in row)

    with web.service.sessions.begin() as session:  # an empty list, as on a new installation
        session.execute(delete(SubscriberCategory))
        session.execute(delete(Subscriber))
    exported = tmp_path / "exported.csv"
    exported.write_text(from_cli)
    assert run_cli(monkeypatch, web_env, "subscribers", "import", str(exported)) == 0
    assert _emails(web) == set(HOSTILE)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from("=+-@\t\r'ab@. \"\n"), max_size=8) | st.text(max_size=8))
def test_every_cell_reads_back_as_it_was_and_never_starts_a_formula(cell: str) -> None:
    safe = neutralise(cell)
    assert restore(safe) == cell
    assert not safe.startswith(FORMULA_STARTS)
