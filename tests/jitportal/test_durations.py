"""parse_duration / format_duration: what people and scripts may write as a duration."""

from __future__ import annotations

from datetime import timedelta

import pytest

from jitportal.durations import duration_label, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("45s", timedelta(seconds=45)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d", timedelta(days=2)),
        ("1500ms", timedelta(seconds=2)),
        ("3600", timedelta(hours=1)),
        (" 90M ", timedelta(minutes=90)),
        (3600, timedelta(hours=1)),
        (90.0, timedelta(seconds=90)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_duration_accepts_seconds_and_go_style_strings(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        0,
        -5,
        "0",
        "-5",
        "0s",
        "abc",
        "1x",
        "",
        "h",
        "1h 30m",
        "-1h",
        True,
        False,
        None,
        float("inf"),
        float("-inf"),
        float("nan"),
        "inf",
        [60],
        {"s": 1},
    ],
)
def test_parse_duration_refuses_zero_negative_and_garbage_with_value_error(value):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["1ms", "0.4", 0.4, timedelta(milliseconds=400)])
def test_parse_duration_refuses_values_that_round_to_zero_seconds(value):
    # A zero-length grant would break the database constraint (a 500), not be refused.
    with pytest.raises(ValueError, match=r"positive|at least"):
        parse_duration(value)


def test_parse_duration_refuses_huge_integers_with_value_error():
    # JSON integers have no size limit; float() of one this large raises OverflowError.
    with pytest.raises(ValueError, match="that long"):
        parse_duration(10**400)
    with pytest.raises(ValueError, match="finite"):
        parse_duration("9" * 400)


def test_parse_duration_refuses_more_than_ten_years():
    with pytest.raises(ValueError, match="long"):
        parse_duration(11 * 365 * 86400)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(seconds=45), "45s"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=14), "14d"),
        (timedelta(hours=1, seconds=1), "1h1s"),
        (timedelta(0), "0s"),
    ],
)
def test_format_duration_writes_go_style(delta, text):
    assert format_duration(delta) == text


@pytest.mark.parametrize("seconds", [1, 59, 61, 3600, 5400, 90061, 14 * 86400])
def test_format_duration_round_trips_through_parse_duration(seconds):
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta


@pytest.mark.parametrize(
    ("delta", "short", "label"),
    [
        (timedelta(0), "0s", "0 s"),
        (timedelta(seconds=45), "45s", "45 s"),
        (timedelta(minutes=90), "1h30m", "1 hour 30 min"),
        (timedelta(hours=2), "2h", "2 hours"),
        (timedelta(days=1, minutes=1, seconds=1), "1d1m1s", "1 day 1 min 1 s"),
        (timedelta(days=14), "14d", "14 days"),
    ],
)
def test_one_module_formats_durations_for_input_and_for_pages(delta, short, label):
    assert format_duration(delta) == short
    if delta:
        assert parse_duration(short) == delta
    assert duration_label(delta) == label
