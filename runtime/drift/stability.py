"""The population stability index (PSI) of a field: the reference's bins, counts in them, and
the index over two sets of counts.

Numbers are binned on the reference's deciles: the nine inner edges, equal ones merged (a
column of few distinct values gets fewer bins), the outer bins open-ended, so a recent value
beyond the reference's range still lands in one. A bin holds the values above its lower edge
up to and including its upper one. Strings and booleans are binned by category: the
reference's ``MAX_CATEGORIES`` most common values, each a bin, and one ``other`` bin for the
rest and for values the reference never had. Every field also has a ``missing`` bin (nulls,
NaN), so a field that starts arriving empty drifts too.

PSI = sum over bins of (recent share - reference share) * ln(recent share / reference share),
a share below ``EPSILON`` counted as ``EPSILON`` (an empty bin would make it infinite).
Conventionally below 0.1 is stable, 0.1 to 0.2 a moderate shift, above 0.2 a significant one.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

EPSILON = 1e-4
QUANTILES = 10  # deciles
MAX_CATEGORIES = 20
NUMBER = "number"
CATEGORY = "category"
OTHER = "other"
MISSING = "missing"


def kind_of(arrow_type: pa.DataType) -> str | None:
    """How a column of ``arrow_type`` is binned: ``NUMBER``, ``CATEGORY``, or None (lists,
    structs, times: not compared)."""
    import pyarrow as pa

    t = arrow_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return CATEGORY
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return NUMBER
    return None


@dataclass(frozen=True)
class Bins:
    """A field's bins, made from its reference column (``of``): ``edges`` for a number (the
    inner edges, ascending), ``categories`` for a category. The last bin is ``missing``."""

    kind: str
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, column: pa.ChunkedArray) -> Bins:
        """The bins of a reference column (whose ``kind_of`` is not None). Raises ValueError
        when it holds no value at all."""
        import numpy as np
        import pyarrow.compute as pc

        kind = kind_of(column.type)
        if kind == NUMBER:
            values = _numbers(column)
            if values.size == 0:
                raise ValueError("no values in the reference")
            inner = np.linspace(0, 1, QUANTILES + 1)[1:-1]
            # Edges are values of the reference (no interpolation): a column of few distinct
            # values gets a bin per value.
            edges = np.unique(np.quantile(values, inner, method="inverted_cdf"))
            return cls(NUMBER, edges=tuple(float(e) for e in edges))
        counts = pc.value_counts(pc.drop_null(_as_text(column)))
        if len(counts) == 0:
            raise ValueError("no values in the reference")
        values, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
        pairs = sorted(zip(values, numbers, strict=True), key=lambda p: (-p[1], p[0]))
        return cls(CATEGORY, categories=tuple(v for v, _ in pairs[:MAX_CATEGORIES]))

    def accepts(self, arrow_type: pa.DataType) -> bool:
        """Whether a recorded column of ``arrow_type`` can be counted in these bins."""
        kind = kind_of(arrow_type)
        return kind == self.kind or (self.kind == CATEGORY and kind == NUMBER)

    def labels(self) -> list[str]:
        """A short label per bin, in order."""
        if self.kind == CATEGORY:
            return [*self.categories, OTHER, MISSING]
        e = [f"{edge:.4g}" for edge in self.edges]
        inner = [f"({lo}, {hi}]" for lo, hi in itertools.pairwise(e)]
        return [f"≤ {e[0]}", *inner, f"> {e[-1]}", MISSING]

    def count(self, values: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """How many of ``values`` fall in each bin (an int64 array, one per label)."""
        import numpy as np
        import pyarrow.compute as pc

        if self.kind == NUMBER:
            numbers = _numbers(values)
            found = np.searchsorted(np.asarray(self.edges), numbers, side="left")
            counts = np.bincount(found, minlength=len(self.edges) + 1)
            return np.append(counts, len(values) - numbers.size).astype(np.int64)
        counts = np.zeros(len(self.categories) + 2, dtype=np.int64)
        tallied = pc.value_counts(_as_text(values))
        place = {c: i for i, c in enumerate(self.categories)}
        for value, n in zip(
            tallied.field("values").to_pylist(), tallied.field("counts").to_pylist(), strict=True
        ):
            counts[-1 if value is None else place.get(value, len(self.categories))] += n
        return counts


def psi(reference: np.ndarray, recent: np.ndarray) -> float:
    """The population stability index of ``recent`` counts against ``reference`` counts over
    the same bins (neither may be all zero)."""
    import numpy as np

    p = np.maximum(reference / reference.sum(), EPSILON)
    q = np.maximum(recent / recent.sum(), EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def _numbers(values: Any) -> np.ndarray:
    """The numbers of an Arrow column as float64, without nulls and NaN (the missing bin's);
    infinities stay, in the outer bins."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    present = pc.drop_null(values)
    if isinstance(present, pa.ChunkedArray):
        present = present.combine_chunks()
    numbers: np.ndarray = pc.cast(present, pa.float64()).to_numpy(zero_copy_only=False)
    finite: np.ndarray = numbers[~np.isnan(numbers)]
    return finite


def _as_text(values: Any) -> Any:
    """A column as strings (booleans as ``true``/``false``), to be counted by category."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(values.type):
        values = pc.cast(values, values.type.value_type)
    return values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
