"""Columnar validation: whole columns checked at once, and only the rows the checks do not pass
validated by pydantic, one by one, as the row path would. A failing row gets the row path's
own error (its field path and message); a row pydantic accepts joins the columns."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from runtime.columnar.checks import check
from runtime.columnar.frame import Columns, put_row
from runtime.columnar.schema import Compiled
from runtime.errors import MlfnError, ValidationFailed

if TYPE_CHECKING:
    import pyarrow as pa
    from numpy.typing import NDArray

# The rows at these indices validated by the row path: each its instance or its error.
RowPath = Callable[[list[int]], Sequence[BaseModel | MlfnError]]


@dataclass
class Validated:
    """All rows' columns (a placeholder at a failed row), and each failed row's error."""

    columns: Columns
    errors: dict[int, MlfnError]
    n: int

    def valid(self) -> NDArray[np.intp]:
        """The indices of the rows that passed, in order."""
        if not self.errors:
            return np.arange(self.n)
        keep = np.ones(self.n, dtype=np.bool_)
        keep[list(self.errors)] = False
        return np.flatnonzero(keep)


def validate(
    plan: Compiled,
    given: Mapping[str, pa.Array | pa.ChunkedArray],
    n: int,
    rows: RowPath,
    null_is_missing: bool = False,
    suspect: NDArray[np.bool_] | None = None,
) -> Validated:
    """``n`` rows of ``given`` columns (by the keys a row would use) against ``plan``.

    null_is_missing: see ``checks.check``. suspect: rows the caller wants the row path to
        decide whatever their columns hold (a JSON null the columns cannot tell from a key
        left out, say)."""
    checked = check(plan, given, n, null_is_missing)
    if suspect is not None:
        checked.suspect |= suspect
    errors: dict[int, MlfnError] = {}
    suspects = np.flatnonzero(checked.suspect).tolist()
    if suspects:
        for row, outcome in zip(suspects, rows(suspects), strict=True):
            if isinstance(outcome, MlfnError):
                errors[row] = outcome
                continue
            try:
                put_row(checked.columns, plan, row, outcome)
            except ValidationFailed as err:
                errors[row] = err
    return Validated(checked.columns, errors, n)
