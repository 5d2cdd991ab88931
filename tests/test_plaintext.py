"""The text part's line layout: 78 columns, URLs whole on lines of their own."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from digestd.mail.plaintext import columns, wrap

URL = "https://news.example.com/story/1?ref=digest&utm_source=newsletter&utm_medium=email&x=1"


def test_words_fill_lines_and_a_long_url_stands_alone_whole() -> None:
    text = f"Read the whole analysis at {URL} before Monday's vote."
    assert wrap(text, indent="   ", first="   Why it matters: ").splitlines() == [
        "   Why it matters: Read the whole analysis at",
        f"   {URL}",
        "   before Monday's vote.",
    ]


def test_a_url_in_brackets_or_quotes_is_whole_on_its_own_line_too() -> None:
    """A mail client links a URL up to the line's end: cut, it links half of it."""
    for before, after in (("(", ")."), ('"', '",'), ("«", "»"), ("<", ">")):
        text = f"The report ({len(before)} page) is at {before}{URL}{after} for all."
        lines = wrap(text).splitlines()
        assert f"{before}{URL}{after}" in lines, lines


def test_a_url_that_fits_stays_in_the_sentence() -> None:
    assert wrap("See https://x.example/a now") == "See https://x.example/a now"


def test_cjk_counts_two_columns_and_unbroken_runs_are_cut() -> None:
    run = "量子コンピュータ" * 12  # 96 characters, 192 columns, no spaces
    lines = wrap(run).splitlines()
    assert len(lines) == 3 and all(columns(line) <= 78 for line in lines)
    assert "".join(lines) == run
    assert columns("é") == 1 and columns("e\u0301") == 1 and columns("字") == 2


def test_line_breaks_and_blank_lines_are_kept() -> None:
    assert wrap("one\n\ntwo  three\nfour") == "one\n\ntwo three\nfour"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=600))
def test_no_line_is_wider_than_78_columns_unless_it_is_a_lone_url(text: str) -> None:
    for line in wrap(f"{text} {URL}{URL} {text}", indent="    ").splitlines():
        assert columns(line) <= 78 or line.strip().lstrip("([{<\"'«“‘").startswith("https://")
    # nothing is lost but spacing
    assert "".join(wrap(text).split()) == "".join(text.split())
