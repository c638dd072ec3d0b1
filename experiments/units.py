"""Human units for moesim: the one parser of bandwidths, times and sizes.

Internally moesim works in base units only:

* time in seconds (``float``),
* size in bytes (``int``),
* bandwidth in bytes per second (``float``).

People write quantities in YAML files and on the command line as strings such
as ``"400Gbps"``, ``"900GB/s"``, ``"500ns"`` or ``"16MiB"``.  This module turns
them into base units (``parse_*``) and back into readable strings (``format_*``).

Conventions
-----------
* ``b`` is a bit and ``B`` is a byte; units are case-sensitive.
  ``400Gbps`` = 400e9 bits/s = 50e9 bytes/s = ``50GB/s``.
* Decimal (SI) prefixes ``K`` (or ``k``), ``M``, ``G``, ``T`` are powers of 1000;
  binary (IEC) prefixes ``Ki``, ``Mi``, ``Gi``, ``Ti`` are powers of 1024.
  Bit rates take decimal prefixes only, as is the networking custom.
* Bandwidth: ``bps Kbps Mbps Gbps Tbps`` (or ``b/s Kb/s Mb/s Gb/s Tb/s``) are bits
  per second; ``B/s KB/s MB/s GB/s TB/s`` and ``KiB/s MiB/s GiB/s TiB/s`` are
  bytes per second.  ``GBps``-style spellings are rejected as easy to misread.
* Time: ``s ms us µs ns ps`` (µ may be the micro sign U+00B5 or Greek mu U+03BC).
* Size: ``B KB MB GB TB`` and ``KiB MiB GiB TiB``; the result must be a whole
  number of bytes (``"1.5KiB"`` is 1536, ``"0.5B"`` is an error).
* A bare number (``int``, ``float`` or a numeric string such as ``"1e9"``) is in
  the base unit: bytes per second, seconds or bytes.
* Whitespace around the value and between number and unit is allowed.
* Booleans, ``None``, NaN and infinities are not quantities.

Parsing is exact: the written decimal number is multiplied by the unit's factor
in decimal arithmetic and rounded once, so ``"0.1Gbps"`` is exactly
``12500000.0`` and ``"8GiB"`` is exactly ``8589934592``.  The ``format_*``
functions return the most readable string that parses back to exactly the same
value.

Every problem raises :class:`UnitError` (a ``ValueError``) with a one-line
message that quotes the offending value and suggests a valid spelling, but does
not name the field: callers prefix that themselves.
"""

import decimal
import math
import numbers
import re
from decimal import Decimal

__all__ = [
    "UnitError",
    "format_bandwidth",
    "format_size",
    "format_time",
    "parse_bandwidth",
    "parse_size",
    "parse_time",
]


class UnitError(ValueError):
    """A value that is not a valid quantity of the expected kind.

    ``str(err)`` is a one-line message without any field name (the caller
    prefixes the field), e.g. ``'"400Gbs" is not a bandwidth (try 400Gbps or 50GB/s)'``.
    """


_BANDWIDTH = "bandwidth"
_TIME = "time"
_SIZE = "size"
_KINDS = (_BANDWIDTH, _TIME, _SIZE)

_EXAMPLES = {
    _BANDWIDTH: "400Gbps or 50GB/s",
    _TIME: "500ns, 2us, 1ms or 1.5s",
    _SIZE: "16MiB, 4KiB or 1GB",
}

#: Largest accepted size, so that sizes fit a signed 64-bit integer.
_MAX_SIZE = 2**63 - 1

_DECIMAL_PREFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BINARY_PREFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}

#: Every accepted unit spelling of each kind -> base units per one of that unit.
_UNITS: dict[str, dict[str, Decimal]] = {kind: {} for kind in _KINDS}
#: Spellings that ``format_*`` may produce: (unit, factor, preference; lower first).
_FORMATS: dict[str, list[tuple[str, Decimal, int]]] = {kind: [] for kind in _KINDS}


def _add(kind: str, spellings: tuple[str, ...], factor: Decimal, rank: int | None) -> None:
    """Register unit spellings; the first one is offered by ``format_*`` unless rank is None."""
    for spelling in spellings:
        _UNITS[kind][spelling] = factor
        if spelling.startswith("K"):  # kilo may also be written k
            _UNITS[kind]["k" + spelling[1:]] = factor
    if rank is not None:
        _FORMATS[kind].append((spellings[0], factor, rank))


for _p, _f in _DECIMAL_PREFIXES.items():
    _add(_BANDWIDTH, (f"{_p}bps", f"{_p}b/s"), Decimal(_f) / 8, 0)
    _add(_BANDWIDTH, (f"{_p}B/s",), Decimal(_f), 1)
    _add(_SIZE, (f"{_p}B",), Decimal(_f), 1)
for _p, _f in _BINARY_PREFIXES.items():
    _add(_BANDWIDTH, (f"{_p}B/s",), Decimal(_f), 2)
    _add(_SIZE, (f"{_p}B",), Decimal(_f), 0)
_add(_TIME, ("s",), Decimal(1), 0)
_add(_TIME, ("ms",), Decimal("1e-3"), 0)
_add(_TIME, ("us", "\u00b5s", "\u03bcs"), Decimal("1e-6"), 0)
_add(_TIME, ("ns",), Decimal("1e-9"), 0)
_add(_TIME, ("ps",), Decimal("1e-12"), 0)

#: Lower-cased spelling -> the valid spellings it could have meant (for case mistakes).
_CASE_FIXES: dict[str, dict[str, list[str]]] = {kind: {} for kind in _KINDS}
for _kind, _table in _UNITS.items():
    for _spelling in _table:
        if not _spelling.startswith("k"):  # suggest the K spelling only
            _CASE_FIXES[_kind].setdefault(_spelling.lower(), []).append(_spelling)
del _p, _f, _kind, _table, _spelling

_QUANTITY = re.compile(
    r"\s*(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(?P<unit>.*?)\s*",
    re.DOTALL,
)
_BYTES_PS = re.compile(r"(?P<prefix>[KkMGT]?)(?P<binary>i?)Bps")


def _show(value: object) -> str:
    """The offending value for a message: quoted if a string, on one line, not too long."""
    text = value.strip() if isinstance(value, str) else repr(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) > 60:
        text = text[:57] + "..."
    return f'"{text}"' if isinstance(value, str) else text


def _unit_error(text: str, number: str, unit: str, kind: str) -> UnitError:
    """The most helpful error for a string whose unit is not a unit of this kind."""
    shown = _show(text)
    bytes_ps = _BYTES_PS.fullmatch(unit)
    if kind == _BANDWIDTH and bytes_ps:
        prefix = bytes_ps["prefix"] + bytes_ps["binary"]
        if bytes_ps["binary"]:
            return UnitError(f"{shown} is not a bandwidth (try {number}{prefix}B/s)")
        return UnitError(
            f"{shown} is ambiguous (try {number}{prefix}B/s for bytes per second"
            f" or {number}{prefix}bps for bits per second)"
        )
    for other in _KINDS:
        if other != kind and unit in _UNITS[other]:
            if kind == _SIZE and unit.endswith("B/s"):
                prefix = unit[:-3].rstrip("i").upper()
                hint = f"{number}{prefix}iB" if prefix else f"{number}B"
            elif kind == _BANDWIDTH and other == _SIZE:
                hint = f"{number}{unit}/s"
            else:
                hint = _EXAMPLES[kind]
            return UnitError(f"{shown} is a {other}, not a {kind} (try {hint})")
    fixes = _CASE_FIXES[kind].get(unit.lower())
    if fixes:
        hint = " or ".join(f"{number}{fix}" for fix in fixes)
        if len(fixes) > 1:
            hint += "; b = bit, B = byte"
        return UnitError(f"{shown} is not a {kind}; units are case-sensitive (try {hint})")
    return UnitError(f"{shown} is not a {kind} (try {_EXAMPLES[kind]})")


def _quantity(value: object, kind: str) -> Decimal:
    """``value`` in base units of ``kind``, exactly, checked finite and not negative."""
    if isinstance(value, bool):
        raise UnitError(f"{_show(value)} is a boolean, not a {kind} (try {_EXAMPLES[kind]})")
    shown = _show(value)
    if isinstance(value, numbers.Integral):
        result = Decimal(int(value))
    elif isinstance(value, numbers.Real):
        as_float = float(value)
        if not math.isfinite(as_float):
            raise UnitError(f"{shown} is not a finite {kind} (try {_EXAMPLES[kind]})")
        result = Decimal(as_float)
    elif isinstance(value, str):
        match = _QUANTITY.fullmatch(value)
        if match is None:
            raise UnitError(f"{shown} is not a {kind} (try {_EXAMPLES[kind]})")
        number, unit = match["number"], match["unit"]
        factor = Decimal(1) if unit == "" else _UNITS[kind].get(unit)
        if factor is None:
            raise _unit_error(value, number, unit, kind)
        # Enough precision for the product to be exact; out-of-range values become infinite.
        context = decimal.Context(
            prec=len(number) + 40, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN, traps=[]
        )
        try:
            result = context.multiply(Decimal(number), factor)
        except ArithmeticError:  # an exponent beyond what Decimal can hold
            raise UnitError(f"{shown} is out of range") from None
        if result.is_infinite():
            raise UnitError(f"{shown} is out of range")
    else:
        raise UnitError(f"{shown} is not a {kind} (try {_EXAMPLES[kind]})")
    if kind == _BANDWIDTH and result <= 0:
        raise UnitError(f"{shown} must be positive")
    if result < 0:
        raise UnitError(f"{shown} must not be negative")
    return result


def _to_float(value: Decimal, original: object) -> float:
    """``value`` correctly rounded to a finite float."""
    result = float(value) + 0.0  # + 0.0 turns -0.0 into 0.0
    if math.isinf(result):
        raise UnitError(f"{_show(original)} is out of range")
    if result == 0 and value != 0:
        raise UnitError(f"{_show(original)} is too small to represent")
    return result


def parse_bandwidth(value: str | int | float) -> float:
    """Parse a bandwidth such as ``"400Gbps"`` or ``"50GB/s"``; returns bytes per second (> 0).

    A bare number is bytes per second.  Raises :class:`UnitError`.
    """
    return _to_float(_quantity(value, _BANDWIDTH), value)


def parse_time(value: str | int | float) -> float:
    """Parse a duration such as ``"500ns"`` or ``"1.5s"``; returns seconds (>= 0).

    A bare number is seconds.  Raises :class:`UnitError`.
    """
    return _to_float(_quantity(value, _TIME), value)


def parse_size(value: str | int | float) -> int:
    """Parse a size such as ``"16MiB"`` or ``"1e6"``; returns a whole number of bytes (>= 0).

    A bare number is bytes.  Raises :class:`UnitError`.
    """
    quantity = _quantity(value, _SIZE)
    if quantity > _MAX_SIZE:
        raise UnitError(f"{_show(value)} is too large for a size (at most {_MAX_SIZE} bytes)")
    if quantity != quantity.to_integral_value():
        raise UnitError(f"{_show(value)} is not a whole number of bytes")
    return int(quantity)


def _number_text(number: Decimal) -> str:
    """Exact text of the normalized ``number``; an exponent only when very large or small."""
    if number == 0:
        return "0"
    return format(number, "f" if -6 <= number.adjusted() < 16 else "e")


def _format(quantity: Decimal, kind: str) -> str:
    """The most readable exact spelling of ``quantity`` (in base units of ``kind``).

    Prefers a number in [1, 1000), then a whole number, then fewer significant
    digits, then the unit's preference rank, then the shorter text.
    """
    if quantity == 0:
        return "0" + next(unit for unit, factor, _ in _FORMATS[kind] if factor == 1)
    context = decimal.Context(prec=len(quantity.as_tuple().digits) + 80)
    best: tuple[tuple[bool, bool, int, int, int], str] | None = None
    for unit, factor, rank in _FORMATS[kind]:
        # Exact: factors are 2**i * 5**j and the precision is ample.
        number = context.divide(quantity, factor).normalize(context)
        text = _number_text(number) + unit
        score = (
            not 1 <= number < 1000,
            number != number.to_integral_value(),
            len(number.as_tuple().digits),
            rank,
            len(text),
        )
        if best is None or score < best[0]:
            best = (score, text)
    assert best is not None
    return best[1]


def _float_quantity(value: object, kind: str) -> Decimal:
    """A float to format, as the exact decimal that its shortest repr denotes."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UnitError(f"{_show(value)} is not a {kind} in base units")
    as_float = float(value) + 0.0
    if not math.isfinite(as_float):
        raise UnitError(f"{_show(value)} is not a finite {kind}")
    if kind == _BANDWIDTH and as_float <= 0:
        raise UnitError(f"{_show(value)} must be positive")
    if as_float < 0:
        raise UnitError(f"{_show(value)} must not be negative")
    return Decimal(repr(as_float))


def format_bandwidth(bytes_per_s: float) -> str:
    """Readable bandwidth for ``bytes_per_s`` (bytes per second, > 0), e.g. 5e10 -> ``"400Gbps"``.

    :func:`parse_bandwidth` of the result is exactly ``bytes_per_s``.
    """
    return _format(_float_quantity(bytes_per_s, _BANDWIDTH), _BANDWIDTH)


def format_time(seconds: float) -> str:
    """Readable duration for ``seconds`` (>= 0), e.g. 5e-7 -> ``"500ns"``.

    :func:`parse_time` of the result is exactly ``seconds``.
    """
    return _format(_float_quantity(seconds, _TIME), _TIME)


def format_size(nbytes: int) -> str:
    """Readable size for ``nbytes`` (a whole number of bytes, >= 0), e.g. 16777216 -> ``"16MiB"``.

    :func:`parse_size` of the result is exactly ``nbytes`` (up to 2**63 - 1).
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, numbers.Real):
        raise UnitError(f"{_show(nbytes)} is not a size in bytes")
    if isinstance(nbytes, numbers.Integral):
        quantity = Decimal(int(nbytes))
    elif math.isfinite(float(nbytes)) and float(nbytes).is_integer():
        quantity = Decimal(float(nbytes))
    else:
        raise UnitError(f"{_show(nbytes)} is not a whole number of bytes")
    if quantity < 0:
        raise UnitError(f"{_show(nbytes)} must not be negative")
    return _format(quantity, _SIZE)
