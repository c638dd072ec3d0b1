"""Tests for experiments.units: parsing and formatting of bandwidths, times and sizes."""

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.units import (
    UnitError,
    format_bandwidth,
    format_size,
    format_time,
    parse_bandwidth,
    parse_size,
    parse_time,
)

PARSERS: list[Callable[[object], object]] = [parse_bandwidth, parse_time, parse_size]
FAST = settings(max_examples=60, deadline=None, database=None)


def error_of(parse: Callable[[object], object], value: object) -> str:
    """The message of the UnitError that parsing ``value`` raises; checks it is one line."""
    with pytest.raises(UnitError) as info:
        parse(value)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert isinstance(info.value, ValueError)
    return message


# --- bandwidth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("400Gbps", 5e10),
        ("50GB/s", 5e10),
        ("900GB/s", 9e11),
        ("450GB/s", 4.5e11),
        ("1bps", 0.125),
        ("8b/s", 1.0),
        ("8Kbps", 1e3),
        ("8kbps", 1e3),
        ("8Kb/s", 1e3),
        ("8kb/s", 1e3),
        ("8Mbps", 1e6),
        ("8Mb/s", 1e6),
        ("8Gb/s", 1e9),
        ("8Tbps", 1e12),
        ("8Tb/s", 1e12),
        ("3B/s", 3.0),
        ("3KB/s", 3e3),
        ("3kB/s", 3e3),
        ("3MB/s", 3e6),
        ("3GB/s", 3e9),
        ("3TB/s", 3e12),
        ("3KiB/s", 3 * 2.0**10),
        ("3MiB/s", 3 * 2.0**20),
        ("3GiB/s", 3 * 2.0**30),
        ("3TiB/s", 3 * 2.0**40),
        ("0.1Gbps", 12_500_000.0),
        ("1.5e2Gbps", 1.875e10),
        (".5GB/s", 5e8),
        ("+5GB/s", 5e9),
        ("400 Gbps", 5e10),
        ("  400\tGbps  ", 5e10),
        ("1e9", 1e9),
        ("2.5", 2.5),
        (1_000_000, 1e6),
        (2.5e9, 2.5e9),
    ],
)
def test_parse_bandwidth(text: str | float, expected: float) -> None:
    result = parse_bandwidth(text)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    ("text", "offending", "hint"),
    [
        ("400Gbs", '"400Gbs"', "try 400Gbps or 50GB/s"),
        ("fast", '"fast"', "400Gbps"),
        ("", '""', "400Gbps"),
        ("Gbps", '"Gbps"', "400Gbps"),
        ("400 G bps", '"400 G bps"', "400Gbps"),
        ("400gbps", '"400gbps"', "try 400Gbps"),
        ("400GBPS", '"400GBPS"', "try 400Gbps"),
        ("400gb/s", '"400gb/s"', "400Gb/s or 400GB/s"),
        ("3gib/s", '"3gib/s"', "try 3GiB/s"),
        ("50GBps", '"50GBps"', "50GB/s"),
        ("50GBps", '"50GBps"', "50Gbps"),
        ("50Bps", '"50Bps"', "50B/s"),
        ("50KiBps", '"50KiBps"', "try 50KiB/s"),
        ("16MiB", '"16MiB"', "is a size, not a bandwidth (try 16MiB/s)"),
        ("5ns", '"5ns"', "is a time, not a bandwidth (try 400Gbps"),
    ],
)
def test_bandwidth_errors(text: str, offending: str, hint: str) -> None:
    message = error_of(parse_bandwidth, text)
    assert offending in message
    assert hint in message


@pytest.mark.parametrize("value", ["-400Gbps", "0Gbps", "-0GB/s", "0", 0, -1.0, "-5"])
def test_bandwidth_must_be_positive(value: object) -> None:
    assert "must be positive" in error_of(parse_bandwidth, value)


def test_bandwidth_negative_message() -> None:
    assert error_of(parse_bandwidth, "-400Gbps") == '"-400Gbps" must be positive'


# --- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ns", 5e-7),
        ("2us", 2e-6),
        ("2\u00b5s", 2e-6),
        ("2\u03bcs", 2e-6),
        ("1ms", 1e-3),
        ("1.5s", 1.5),
        ("3ps", 3e-12),
        ("0.1ms", 1e-4),
        ("0s", 0.0),
        ("-0ns", 0.0),
        ("10 ns", 1e-8),
        ("1.5", 1.5),
        ("1e-6", 1e-6),
        (2, 2.0),
        (0.25, 0.25),
        (0, 0.0),
    ],
)
def test_parse_time(text: str | float, expected: float) -> None:
    result = parse_time(text)
    assert result == expected
    assert type(result) is float
    assert math.copysign(1.0, result) == 1.0  # never -0.0


@pytest.mark.parametrize(
    ("text", "offending", "hint"),
    [
        ("5 parsecs", '"5 parsecs"', "try 500ns, 2us, 1ms or 1.5s"),
        ("5 sec", '"5 sec"', "try 500ns"),
        ("5MS", '"5MS"', "try 5ms"),
        ("5NS", '"5NS"', "try 5ns"),
        ("5S", '"5S"', "try 5s"),
        ("5GB/s", '"5GB/s"', "is a bandwidth, not a time (try 500ns"),
        ("5KiB", '"5KiB"', "is a size, not a time (try 500ns"),
    ],
)
def test_time_errors(text: str, offending: str, hint: str) -> None:
    message = error_of(parse_time, text)
    assert offending in message
    assert hint in message


def test_time_message_exact() -> None:
    assert error_of(parse_time, "5 parsecs") == ('"5 parsecs" is not a time (try 500ns, 2us, 1ms or 1.5s)')


@pytest.mark.parametrize("value", ["-5ns", "-1", -1, -0.5])
def test_time_must_not_be_negative(value: object) -> None:
    assert "must not be negative" in error_of(parse_time, value)


# --- size ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16MiB", 16_777_216),
        ("4KiB", 4096),
        ("4kiB", 4096),
        ("8GiB", 8_589_934_592),
        ("2TiB", 2 * 2**40),
        ("1.5KiB", 1536),
        ("7B", 7),
        ("3KB", 3000),
        ("3kB", 3000),
        ("3MB", 3_000_000),
        ("3GB", 3_000_000_000),
        ("3TB", 3_000_000_000_000),
        ("1e6", 1_000_000),
        ("1.5e3", 1500),
        ("0", 0),
        ("16 MiB", 16_777_216),
        (4096, 4096),
        (1e6, 1_000_000),
        (2**62, 2**62),
    ],
)
def test_parse_size(text: str | float, expected: int) -> None:
    result = parse_size(text)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("text", "offending", "hint"),
    [
        ("16MB/s", '"16MB/s"', "is a bandwidth, not a size (try 16MiB)"),
        ("16MiB/s", '"16MiB/s"', "is a bandwidth, not a size (try 16MiB)"),
        ("8Gbps", '"8Gbps"', "is a bandwidth, not a size (try 16MiB"),
        ("5ns", '"5ns"', "is a time, not a size (try 16MiB"),
        ("16mib", '"16mib"', "try 16MiB"),
        ("16mb", '"16mb"', "try 16MB"),
        ("16b", '"16b"', "try 16B"),
        ("16 megs", '"16 megs"', "try 16MiB, 4KiB or 1GB"),
        ("0.5B", '"0.5B"', "whole number of bytes"),
        ("0.1KiB", '"0.1KiB"', "whole number of bytes"),
        (0.5, "0.5", "whole number of bytes"),
        ("1e30", '"1e30"', "too large"),
        ("-4KiB", '"-4KiB"', "must not be negative"),
        (-1, "-1", "must not be negative"),
    ],
)
def test_size_errors(text: object, offending: str, hint: str) -> None:
    message = error_of(parse_size, text)
    assert offending in message
    assert hint in message


def test_size_message_exact() -> None:
    assert error_of(parse_size, "16MB/s") == '"16MB/s" is a bandwidth, not a size (try 16MiB)'


# --- values that are not quantities at all ---------------------------------------------------


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize(
    "value",
    [True, False, None, math.nan, math.inf, -math.inf, "nan", "inf", "-inf", [1], {"a": 1}, b"1"],
)
def test_not_quantities(parse: Callable[[object], object], value: object) -> None:
    message = error_of(parse, value)
    assert "try" in message


@pytest.mark.parametrize("parse", PARSERS)
def test_bool_is_named(parse: Callable[[object], object]) -> None:
    assert error_of(parse, True).startswith("True is a boolean")


@pytest.mark.parametrize("parse", PARSERS)
@pytest.mark.parametrize("text", ["1e400", "1e400GB", "1e99999999999999999999"])
def test_out_of_range(parse: Callable[[object], object], text: str) -> None:
    message = error_of(parse, text)
    assert f'"{text}"' in message


def test_control_characters_stay_on_one_line() -> None:
    message = error_of(parse_time, "5 n\ns\x00")
    assert '"5 n\\ns\\x00"' in message


def test_long_values_are_shortened() -> None:
    message = error_of(parse_size, "x" * 500)
    assert len(message) < 150


# --- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5e10, "400Gbps"),
        (1.25e10, "100Gbps"),
        (9e11, "900GB/s"),
        (4.5e11, "450GB/s"),
        (2.0**30, "1GiB/s"),
        (1.0, "8bps"),
    ],
)
def test_format_bandwidth(value: float, expected: str) -> None:
    assert format_bandwidth(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5e-7, "500ns"), (2e-6, "2us"), (1e-3, "1ms"), (1.5, "1.5s"), (0.0, "0s"), (-0.0, "0s")],
)
def test_format_time(value: float, expected: str) -> None:
    assert format_time(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (16_777_216, "16MiB"),
        (4096, "4KiB"),
        (1536, "1.5KiB"),
        (1_000_000, "1MB"),
        (0, "0B"),
        (100, "100B"),
        (8_589_934_592, "8GiB"),
    ],
)
def test_format_size(value: int, expected: str) -> None:
    assert format_size(value) == expected


@pytest.mark.parametrize(
    ("format_", "value"),
    [
        (format_bandwidth, 0.0),
        (format_bandwidth, -1.0),
        (format_bandwidth, math.nan),
        (format_bandwidth, True),
        (format_time, -1.0),
        (format_time, math.inf),
        (format_time, None),
        (format_size, -1),
        (format_size, 1.5),
        (format_size, False),
        (format_size, "16MiB"),
    ],
)
def test_format_rejects(format_: Callable[[object], str], value: object) -> None:
    with pytest.raises(UnitError):
        format_(value)


# --- properties ------------------------------------------------------------------------------


@FAST
@given(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, allow_nan=False))
def test_bandwidth_round_trip(value: float) -> None:
    assert parse_bandwidth(format_bandwidth(value)) == value


@FAST
@given(st.floats(min_value=0.0, allow_infinity=False, allow_nan=False))
def test_time_round_trip(value: float) -> None:
    assert parse_time(format_time(value)) == value


@pytest.mark.parametrize("value", [10**15 + 1, 2**63 - 1, 2**62 + 1, 1023, 1025])
def test_size_round_trip_examples(value: int) -> None:
    assert parse_size(format_size(value)) == value


@FAST
@given(st.integers(min_value=0, max_value=2**63 - 1))
def test_size_round_trip(value: int) -> None:
    assert parse_size(format_size(value)) == value


@FAST
@given(
    st.integers(min_value=1, max_value=10**6),
    st.sampled_from(["", "K", "M", "G", "T"]),
    st.sampled_from(["bps", "b/s"]),
)
def test_bit_rates_are_exact(number: int, prefix: str, unit: str) -> None:
    factor = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}[prefix]
    assert parse_bandwidth(f"{number}{prefix}{unit}") == number * factor / 8


@FAST
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["Ki", "Mi", "Gi", "Ti"]))
def test_binary_sizes_are_exact(number: int, prefix: str) -> None:
    factor = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}[prefix]
    assert parse_size(f"{number}{prefix}B") == number * factor
    assert parse_bandwidth(f"{number + 1} {prefix}B/s") == (number + 1) * factor


@FAST
@given(st.text(max_size=20))
def test_arbitrary_text_gives_unit_error_or_value(text: str) -> None:
    for parse in PARSERS:
        try:
            parse(text)
        except UnitError as error:
            assert "\n" not in str(error)
