"""CSV cells that are safe to open in a spreadsheet, and read back exactly.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula
to Excel, LibreOffice and Google Sheets, and addresses such as ``=cmd|x@example.com`` or
``-2+3@example.com`` are valid (RFC 5322 allows those characters): a signup could plant a
formula that runs when an operator opens the export. Such cells get a leading single
quote, as OWASP's "CSV Injection" advises. A cell that already starts with a quote gets one
more, so :func:`restore` undoes exactly one and an export imports back to the same
addresses.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def neutralise(cell: str) -> str:
    return QUOTE + cell if cell.startswith((*FORMULA_STARTS, QUOTE)) else cell


def restore(cell: str) -> str:
    """The value :func:`neutralise` was given (a cell it did not change is left alone)."""
    if cell.startswith(QUOTE) and cell[1:].startswith((*FORMULA_STARTS, QUOTE)):
        return cell[1:]
    return cell
