"""CSV cells a spreadsheet would run as formulas, made inert (OWASP's CSV injection defence).

A CSV output that echoes input (a label, a name, an error message) could otherwise carry
``=HYPERLINK(...)`` or ``=cmd|' /C calc'!A0`` into whoever opens the file in Excel, LibreOffice
or Google Sheets. Every CSV mlfn writes (batch-file results, ``mlfn spark-score`` output) puts
each text cell through ``safe_cell``: one rule, one place.
"""

from __future__ import annotations

import re
from typing import Any

# What a spreadsheet reads as the start of a formula (or, for tab and CR, of a cell it
# re-parses): OWASP's list.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# A plain number ("-1.5", "+3e10") is no formula: left as it is, so numbers stay numbers.
# ASCII digits only: a sign and an Arabic-Indic digit is no number to a spreadsheet, which
# would run it. The pattern is also read by Arrow (RE2), which writes CSV results a column
# at a time.
NUMBER = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(NUMBER)


def safe_cell(value: Any) -> Any:
    """``value``, or, for text a spreadsheet would take for a formula, the text behind a
    single quote (``'=1+1``), which spreadsheets show as text and do not run. Anything but
    text passes unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value
