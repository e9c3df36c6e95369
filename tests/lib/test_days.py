"""pipelines/lib/days.py: the one place ranges of reporting days are walked, cut and folded."""

from datetime import date, timedelta

import pytest

from pipelines.lib.days import chunks, month_chunks, spans, window_days

D = date.fromisoformat


def test_window_days_walks_every_day_in_order_across_month_ends_and_the_leap_day():
    assert window_days(D("2028-02-27"), D("2028-03-01")) == [D("2028-02-27"), D("2028-02-28"), D("2028-02-29"),
                                                              D("2028-03-01")]
    assert window_days(D("2027-02-27"), D("2027-03-01")) == [D("2027-02-27"), D("2027-02-28"), D("2027-03-01")]
    assert window_days(D("2027-12-31"), D("2028-01-01")) == [D("2027-12-31"), D("2028-01-01")]
    assert window_days(D("2028-02-29"), D("2028-02-29")) == [D("2028-02-29")]
    assert window_days(D("2028-03-01"), D("2028-02-29")) == []
    assert len(window_days(D("2028-01-01"), D("2028-12-31"))) == 366


@pytest.mark.parametrize("first, last, size", [
    ("2028-02-01", "2028-03-31", 30), ("2028-02-28", "2028-03-02", 1), ("2027-12-15", "2028-01-20", 7),
    ("2028-02-29", "2028-02-29", 31), ("2028-01-01", "2028-12-31", 31),
])
def test_chunks_cover_the_range_once_in_order_each_at_most_size_days(first, last, size):
    first, last = D(first), D(last)
    got = chunks(first, last, size)
    assert got[0][0] == first and got[-1][1] == last
    assert all(a <= b and (b - a).days + 1 <= size for a, b in got)
    assert all(got[i][1] + timedelta(days=1) == got[i + 1][0] for i in range(len(got) - 1))  # no gap, no overlap
    assert all((b - a).days + 1 == size for a, b in got[:-1])  # only the last one is short
    assert [d for a, b in got for d in window_days(a, b)] == window_days(first, last)


def test_chunks_of_a_leap_february_and_the_edge_cases():
    assert chunks(D("2028-02-20"), D("2028-03-05"), 5) == [
        (D("2028-02-20"), D("2028-02-24")), (D("2028-02-25"), D("2028-02-29")),
        (D("2028-03-01"), D("2028-03-05"))]
    assert chunks(D("2028-03-01"), D("2028-02-29"), 5) == []
    for size in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="at least 1"):
            chunks(D("2028-02-01"), D("2028-02-29"), size)


def test_month_chunks_cut_at_month_ends_including_a_leap_february_and_the_year_end():
    assert month_chunks(D("2028-01-15"), D("2028-03-10")) == [
        (D("2028-01-15"), D("2028-01-31")), (D("2028-02-01"), D("2028-02-29")), (D("2028-03-01"), D("2028-03-10"))]
    assert month_chunks(D("2027-02-10"), D("2027-03-01")) == [
        (D("2027-02-10"), D("2027-02-28")), (D("2027-03-01"), D("2027-03-01"))]
    assert month_chunks(D("2027-12-31"), D("2028-01-01")) == [
        (D("2027-12-31"), D("2027-12-31")), (D("2028-01-01"), D("2028-01-01"))]
    assert month_chunks(D("2028-02-29"), D("2028-02-29")) == [(D("2028-02-29"), D("2028-02-29"))]
    assert month_chunks(D("2028-03-01"), D("2028-02-29")) == []
    year = month_chunks(D("2028-01-01"), D("2028-12-31"))
    assert len(year) == 12 and sum((b - a).days + 1 for a, b in year) == 366


def test_spans_sort_drop_repeats_and_fold_consecutive_days_across_the_leap_day():
    days = [D("2028-03-01"), D("2028-02-28"), D("2028-02-29"), D("2028-02-28"), D("2028-03-03"), D("2027-12-31"),
            D("2028-01-01")]
    assert spans(days) == [(D("2027-12-31"), D("2028-01-01")), (D("2028-02-28"), D("2028-03-01")),
                           (D("2028-03-03"), D("2028-03-03"))]
    assert spans([D("2027-02-28"), D("2027-03-01")]) == [(D("2027-02-28"), D("2027-03-01"))]
    assert spans(iter([])) == []
    assert spans(window_days(D("2028-02-01"), D("2028-03-31"))) == [(D("2028-02-01"), D("2028-03-31"))]
