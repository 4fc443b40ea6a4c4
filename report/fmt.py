"""How numbers and provenance read in every table, so the same figure always prints the same way."""

from __future__ import annotations

from typing import Any

from common.spread import Spread

MISSING = "—"


def number(value: float | None, digits: int = 1) -> str:
    """Thousands separators and a fixed number of decimals; '—' when there is no value."""
    return MISSING if value is None else f"{value:,.{digits}f}"


def rps(value: float | None) -> str:
    return number(value, 1)


def ms(value: float | None) -> str:
    return number(value, 2)


def spread(figure: Spread | None, digits: int = 1) -> str:
    """'795.5 [780.0-801.3]': the median over the repeats, then their min-max; '—' when not measured."""
    if figure is None:
        return MISSING
    if figure.n == 1:
        return number(figure.median, digits)
    return f"{number(figure.median, digits)} [{number(figure.low, digits)}-{number(figure.high, digits)}]"


def percent(fraction: float | None, digits: int = 1) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.{digits}f}%"


def pace(side: str, before: float, after: float) -> str:
    """One framework's in-process ceiling at two moments: 'tf 1,420 -> 1,247 calls/s (-12.2%)'."""
    return f"{side} {before:,.0f} -> {after:,.0f} calls/s ({after / before - 1:+.1%})"


def integer(value: int | None) -> str:
    return MISSING if value is None else f"{value:,}"


def points(value: float) -> str:
    """Accuracy points: '1 point', '2.5 points'."""
    return f"{value:g} point{'' if value == 1 else 's'}"


def value(item: Any) -> str:
    """Any recorded scalar, for generic columns: floats below 1 to 3 significant digits, so they never read 0.00."""
    if item is None:
        return MISSING
    if isinstance(item, bool):
        return "yes" if item else "no"
    if isinstance(item, int):
        return integer(item)
    if isinstance(item, float):
        return number(item, 2) if abs(item) >= 1 else f"{item:.3g}"
    return str(item)


def status(valid: bool, reasons: list[str]) -> str:
    if valid:
        return "valid"
    return "INVALID: " + ("; ".join(reasons) if reasons else "no reason recorded")


def knobs(values: dict[str, Any] | None) -> str:
    """Knobs as key=value; those recorded as None (not set: the server's own default holds) are left out."""
    shown = {key: value for key, value in (values or {}).items() if value is not None}
    if not shown:
        return "defaults"
    return ", ".join(f"{key}={shown[key]}" for key in sorted(shown))


def server(record: dict[str, Any]) -> str:
    """Which binary served the numbers; the drop-in always says it is not the official one."""
    kind = "official" if record.get("official") else "drop-in, not the official binary"
    return f"{record['binary']} {record['version']} ({kind})"


def server_identity(record: dict[str, Any]) -> str:
    """The server's own description beside the short form, for provenance lines."""
    return f"{server(record)}, reported as '{record['identity']}'"


def cpus(values: list[int] | None) -> str:
    return "any" if not values else ",".join(str(v) for v in values)


def hardware(host: dict[str, Any]) -> str:
    extra = f", {host['os']}" if host.get("os") else ""
    return f"{host.get('cpu_model', '?')}, {host.get('logical_cpus', '?')} logical CPUs{extra}"


def pinning(record: dict[str, Any]) -> str:
    if not record.get("applied"):
        text = "not applied (server and generator share the CPUs)"
    else:
        text = f"applied: generator on CPUs {cpus(record.get('generator_cpus'))}, " \
               f"server on CPUs {cpus(record.get('server_cpus'))}"
    return f"{text}; {record['note']}" if record.get("note") else text


def packages(values: dict[str, str]) -> str:
    return ", ".join(f"{name} {values[name]}" for name in sorted(values)) or "not recorded"
