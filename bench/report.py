"""Medians over rounds, ratios, and the table in text, markdown and JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.context import Measurement
from bench.layers import RAW, REFERENCE

# Where a scenario has no raw run of its own, the ceiling it is compared with.
CEILING_FALLBACK = {"worker-K": ("p2p-2proc", "throughput")}
EXPIRY_SCENARIO = "backlog-expiry"


@dataclass
class Row:
    """One (scenario, metric, layer) over all rounds."""

    scenario: str
    metric: str
    unit: str
    better: str
    layer: str
    values: list[float] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    expected: int = 0
    commands_per_op: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    vs_core: float | None = None
    vs_raw: float | None = None

    @property
    def median(self) -> float | None:
        """Median over the rounds that produced a value."""
        return statistics.median(self.values) if self.values else None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "scenario": self.scenario,
            "metric": self.metric,
            "unit": self.unit,
            "better": self.better,
            "layer": self.layer,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "values": self.values,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "expected": self.expected,
            "commands_per_op": statistics.median(self.commands_per_op)
            if self.commands_per_op
            else None,
            "errors": self.errors,
            "vs_core": self.vs_core,
            "vs_raw": self.vs_raw,
        }


def summarize(measurements: list[Measurement]) -> list[Row]:
    """Group per (scenario, metric, layer) in first-seen order and compute ratios."""
    rows: dict[tuple[str, str, str], Row] = {}
    for m in measurements:
        key = (m.scenario, m.metric, m.layer)
        row = rows.setdefault(key, Row(m.scenario, m.metric, m.unit, m.better, m.layer))
        if m.value is not None:
            row.values.append(m.value)
        row.lost += m.lost
        row.duplicated += m.duplicated
        row.out_of_order += m.out_of_order
        row.expected += m.expected
        if m.commands_per_op is not None:
            row.commands_per_op.append(m.commands_per_op)
        if m.error:
            row.errors.append(m.error)
    for (scenario, metric, layer), row in rows.items():
        row.vs_core = _ratio(row, rows.get((scenario, metric, REFERENCE)))
        if layer != RAW:
            ceiling = rows.get((scenario, metric, RAW))
            for prefix, (ref_scenario, ref_metric) in CEILING_FALLBACK.items():
                if ceiling is None and scenario.startswith(prefix):
                    ceiling = rows.get((ref_scenario, ref_metric, RAW))
            row.vs_raw = _ratio(row, ceiling)
    order = {name: i for i, name in enumerate(dict.fromkeys(k[0] for k in rows))}
    return sorted(rows.values(), key=lambda r: order[r.scenario])


def _ratio(row: Row, reference: Row | None) -> float | None:
    if reference is None or reference is row or row.median is None or not reference.median:
        return None
    return row.median / reference.median


def violations(rows: list[Row], strict_layers: set[str]) -> list[str]:
    """Lost / duplicated messages, errors or leftover keys of layers that promise none."""
    found = []
    for row in rows:
        if row.layer not in strict_layers:
            continue
        where = f"{row.scenario} {row.metric} [{row.layer}]"
        if row.lost:
            found.append(f"{where}: {row.lost} lost")
        if row.duplicated:
            found.append(f"{where}: {row.duplicated} duplicated")
        found.extend(f"{where}: {error}" for error in row.errors)
        if row.scenario == EXPIRY_SCENARIO and row.unit == "keys" and any(row.values):
            found.append(f"{where}: keys left after expiry")
    return found


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in {"ms"}:
        return f"{value:.3f}"
    if unit == "%":
        return f"{value:.1f}"
    if unit == "keys":
        return f"{value:.0f}"
    if unit == "s":
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _ratio_fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


HEADER = (
    "scenario",
    "metric",
    "layer",
    "median",
    "min-max",
    "lost",
    "dup",
    "ooo",
    "cmds/op",
    "vs core",
    "vs raw",
)


def _cells(row: Row) -> tuple[str, ...]:
    spread = (
        "-"
        if not row.values
        else f"{_fmt(min(row.values), row.unit)}-{_fmt(max(row.values), row.unit)}"
    )
    cmds = statistics.median(row.commands_per_op) if row.commands_per_op else None
    metric = f"{row.metric} ({row.unit}, {row.better} is better)"
    median = _fmt(row.median, row.unit) + (" ERR" if row.errors else "")
    return (
        row.scenario,
        metric,
        row.layer,
        median,
        spread,
        str(row.lost),
        str(row.duplicated),
        str(row.out_of_order),
        "-" if cmds is None else f"{cmds:.1f}",
        _ratio_fmt(row.vs_core),
        _ratio_fmt(row.vs_raw),
    )


def text_table(rows: list[Row]) -> str:
    """A fixed-width table for the terminal."""
    lines = [HEADER, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for index, line in enumerate(lines):
        out.append(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    """A GitHub markdown table."""
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out.extend("| " + " | ".join(_cells(row)) + " |" for row in rows)
    return "\n".join(out)


def write_json(
    path: Path, meta: dict[str, Any], measurements: list[Measurement], rows: list[Row]
) -> None:
    """Everything measured, per round and summarized."""
    document = {
        **meta,
        "summary": [row.as_dict() for row in rows],
        "measurements": [m.as_dict() for m in measurements],
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def write_markdown(path: Path, meta: dict[str, Any], rows: list[Row]) -> None:
    """The table with the command and date that produced it."""
    text = (
        f"Measured {meta['date']} with `{meta['command']}` "
        f"({meta['rounds']} round(s), Redis {meta['redis_version']}, {meta['cpus']} CPUs).\n\n"
        + markdown_table(rows)
        + "\n"
    )
    path.write_text(text)
