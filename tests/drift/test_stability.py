from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from runtime.drift.stability import CATEGORY, EPSILON, NUMBER, Bins, psi


def test_identical_distributions_have_a_psi_of_zero() -> None:
    values = pa.chunked_array([np.random.default_rng(0).normal(0, 1, 5000)])
    bins = Bins.of(values)
    assert psi(bins.count(values), bins.count(values)) == pytest.approx(0.0, abs=1e-12)


def test_two_samples_of_one_normal_stay_below_the_stable_mark() -> None:
    rng = np.random.default_rng(1)
    reference = pa.chunked_array([rng.normal(0, 1, 5000)])
    bins = Bins.of(reference)
    recent = pa.array(rng.normal(0, 1, 3000))
    assert psi(bins.count(reference), bins.count(recent)) < 0.02


def test_a_normal_shifted_by_one_standard_deviation_drifts() -> None:
    rng = np.random.default_rng(2)
    reference = pa.chunked_array([rng.normal(0, 1, 5000)])
    bins = Bins.of(reference)
    recent = pa.array(rng.normal(1, 1, 3000))
    assert psi(bins.count(reference), bins.count(recent)) > 0.2


def test_psi_of_known_counts() -> None:
    # (0.25 - 0.5) ln(0.25/0.5) + (0.75 - 0.5) ln(0.75/0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(expected)


def test_an_empty_bin_counts_as_epsilon_not_infinity() -> None:
    value = psi(np.array([50, 50, 0]), np.array([50, 40, 10]))
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - EPSILON) * math.log(0.1 / EPSILON)
    assert value == pytest.approx(expected)


def test_deciles_are_the_edges_with_equal_ones_merged_and_outer_bins_open() -> None:
    bins = Bins.of(pa.chunked_array([[0, 0, 0, 0, 1, 1, 1, 2, 2, 2]]))
    assert bins.kind == NUMBER
    assert bins.edges == (0.0, 1.0, 2.0)
    assert bins.labels() == ["≤ 0", "(0, 1]", "(1, 2]", "> 2", "missing"]
    # Far below and far above the reference's range, a null and a NaN.
    counts = bins.count(pa.array([-100.0, 1.0, 1.5, 99.0, None, float("nan")]))
    assert counts.tolist() == [1, 1, 1, 1, 2]


def test_categories_unseen_in_the_reference_count_as_other_and_nulls_as_missing() -> None:
    bins = Bins.of(pa.chunked_array([["a", "a", "b", None]]))
    assert bins.kind == CATEGORY
    assert bins.labels() == ["a", "b", "other", "missing"]
    assert bins.count(pa.array(["b", "z", "y", None, "a"])).tolist() == [1, 1, 2, 1]


def test_booleans_are_categories() -> None:
    bins = Bins.of(pa.chunked_array([[True, True, False]]))
    assert bins.labels() == ["true", "false", "other", "missing"]
    assert bins.count(pa.array([False, False, None])).tolist() == [0, 2, 0, 1]


def test_a_reference_column_without_values_cannot_be_binned() -> None:
    with pytest.raises(ValueError, match="no values"):
        Bins.of(pa.chunked_array([pa.array([None, None], pa.float64())]))
