"""Result rows in the papers' Table-2 layout: method order, test-set columns, CSV, Markdown and HTML.

A result row is one (method, test set) evaluation: ``{"track", "test_set", "domain",
"method", **summary}`` where the summary is `rait.evaluate.runner.summarize`'s dict
(``n``, ``macro_over``, ``pc``/``pw``/``pr``/``pu``/``ths`` as ``{"value", "low", "high"}``,
``seconds``). A summary without a ``ths`` key was not compared with a reference (the
reference run itself); ``ths: None`` means THS is undefined (the reference made no wrong
answer).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import pandas as pd

from rait.errors import RaitError

REFERENCE = "Init-Basic"
METRICS = ("pc", "pw", "pr", "pu", "ths")
TABLE_METRICS = ("pc", "pw", "ths")
METRIC_LABELS = {"pc": "Pc", "pw": "Pw", "pr": "Pr", "pu": "Pu", "ths": "THS"}
DOMAIN_ORDER = ("ID", "OOD", "VAL")
UNDEFINED = "–"
NOT_COMPARED = "ref."
Cell = tuple[str, str]  # the texts of one table cell: value and interval

# Table 2 of CRaFT (AAAI'25), then the other methods rait builds. Keys are names lower-cased
# with everything but letters and digits dropped, so "CorCer-RAIT", "corcer_rait",
# "craft_wo_flow" and "CRaFT w/o Flow" share a slot.
_SLOTS = [
    ("initbasic",),
    ("initrefuse",),
    ("vantuning", "vanilla"),
    ("corrait",),
    ("craft",),
    ("woflow", "craftwoflow", "corcerrait"),
    ("wocer", "craftwocer"),
    ("rtuning", "rtuningunknown", "rtuningunsure"),
    ("grait",),
]
_RANK = {key: rank for rank, keys in enumerate(_SLOTS) for key in keys}
_SHARED_KEYS = ("track", "test_set", "domain", "method")


def method_key(method: str) -> str:
    """'CRaFT w/o Cer' -> 'craftwocer': the name without case, spaces or punctuation."""
    return re.sub(r"[^a-z0-9]", "", method.lower())


def order_methods(methods: Iterable[str]) -> list[str]:
    """Distinct methods in Table-2 order; methods the table does not know follow in the order given."""
    distinct = list(dict.fromkeys(methods))
    unknown_rank = len(_SLOTS)
    return sorted(distinct, key=lambda m: (_RANK.get(method_key(m), unknown_rank), distinct.index(m)))


@dataclass(frozen=True)
class ColumnGroup:
    """One column group of the table: a test set, its track and whether it is in- or out-of-domain."""

    test_set: str
    track: str | None = None
    domain: str | None = None

    @property
    def label(self) -> str:
        return f"{self.test_set} ({self.domain})" if self.domain else self.test_set


def order_test_sets(rows: Sequence[dict]) -> list[ColumnGroup]:
    """Tracks in the order first seen; within a track the ID test sets, then OOD, then any others."""
    columns: dict[str, ColumnGroup] = {}
    for row in rows:
        column = ColumnGroup(row["test_set"], row.get("track"), row.get("domain"))
        seen = columns.setdefault(column.test_set, column)
        if seen != column:
            raise RaitError(f"test set {column.test_set!r} appears with two track/domain labels: {seen} and {column}")
    listed = list(columns.values())
    tracks = list(dict.fromkeys(c.track for c in listed))

    def position(column: ColumnGroup) -> tuple[int, int, int]:
        domain = DOMAIN_ORDER.index(column.domain) if column.domain in DOMAIN_ORDER else len(DOMAIN_ORDER)
        return tracks.index(column.track), domain, listed.index(column)

    return sorted(listed, key=position)


def check_rows(rows: Sequence[dict]) -> list[dict]:
    """The rows, refused with one clear message if a field is missing or a (method, test set) repeats."""
    if not rows:
        raise RaitError("no result rows to report")
    seen = set()
    for i, row in enumerate(rows):
        missing = [k for k in ("test_set", "method", "pc", "pw") if row.get(k) is None]
        if missing:
            raise RaitError(f"result row #{i + 1} lacks {', '.join(missing)}")
        for key in METRICS:
            metric = row.get(key)
            if metric is not None and not {"value", "low", "high"} <= set(metric):
                raise RaitError(f"result row #{i + 1}: {key} needs value, low and high, got {metric!r}")
        pair = (row["method"], row["test_set"])
        if pair in seen:
            raise RaitError(f"two result rows for method {pair[0]!r} on test set {pair[1]!r}")
        seen.add(pair)
    return list(rows)


def _is_reference(method: str, reference: str) -> bool:
    return method_key(method) == method_key(reference)


def interval_parts(metric: dict | None, digits: int = 1) -> Cell:
    """('45.6', '[43.1, 48.0]'); no interval text when it is undefined; ('–', '') when the metric is."""
    if metric is None:
        return UNDEFINED, ""
    value = f"{metric['value']:.{digits}f}"
    if any(metric[k] is None or math.isnan(metric[k]) for k in ("low", "high")):
        return value, ""
    return value, f"[{metric['low']:.{digits}f}, {metric['high']:.{digits}f}]"


def format_interval(metric: dict | None, digits: int = 1) -> str:
    """'45.6 [43.1, 48.0]', the way every cell of the table reads."""
    return " ".join(part for part in interval_parts(metric, digits) if part)


def cell_parts(row: dict | None, key: str, reference: str = REFERENCE) -> Cell:
    """One table cell: blank when the method was not run on the test set, 'ref.' for the reference's THS."""
    if row is None:
        return "", ""
    if key == "ths" and "ths" not in row:
        return (NOT_COMPARED if _is_reference(row["method"], reference) else UNDEFINED), ""
    return interval_parts(row.get(key))


def results_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """One flat row per method × test set (table order), each metric as value, _low and _high columns."""
    rows = check_rows(rows)
    columns = order_test_sets(rows)
    methods = order_methods(row["method"] for row in rows)
    by_pair = {(row["test_set"], row["method"]): row for row in rows}
    extra = list(dict.fromkeys(k for row in rows for k, v in row.items()
                               if k not in (*_SHARED_KEYS, *METRICS, "n", "macro_over") and _is_scalar(v)))
    flat = []
    for column in columns:
        for method in methods:
            row = by_pair.get((column.test_set, method))
            if row is None:
                continue
            entry: dict[str, Any] = {"track": column.track, "test_set": column.test_set, "domain": column.domain,
                                     "method": method, "n": row.get("n"), "macro_over": row.get("macro_over")}
            for key in METRICS:
                metric = row.get(key) or {}
                entry |= {key: metric.get("value"), f"{key}_low": metric.get("low"), f"{key}_high": metric.get("high")}
            flat.append(entry | {k: row.get(k) for k in extra})
    return pd.DataFrame(flat)


def abstention_frame(rows: Sequence[dict]) -> pd.DataFrame | None:
    """The abstention metrics of every evaluation (`rait.evaluate.runner.abstention_metrics`), in table order;
    None when no row carries them."""
    by_pair = {(row["test_set"], row["method"]): row for row in check_rows(rows) if row.get("abstention")}
    if not by_pair:
        return None
    flat = []
    for column in order_test_sets(rows):
        for method in order_methods(row["method"] for row in rows):
            row = by_pair.get((column.test_set, method))
            if row is not None:
                flat.append({"track": column.track, "test_set": column.test_set, "domain": column.domain,
                             "method": method, **row["abstention"]})
    return pd.DataFrame(flat)


# The columns of the report's second table: TruthRL's triple and score, and what over- and under-refusal cost.
ABSTENTION_COLUMNS = {"accuracy": "accuracy", "abstention": "abstention", "hallucination": "hallucination",
                      "truthfulness": "truthfulness (acc − hall)", "over_refusal": "over-refusal",
                      "prudence": "prudence"}


def abstention_markdown(rows: Sequence[dict]) -> str | None:
    """A Markdown table of `ABSTENTION_COLUMNS` (and AURC where a row has a confidence), or None without them."""
    frame = abstention_frame(rows)
    if frame is None:
        return None
    aurc = {(row["test_set"], row["method"]): row.get("aurc") for row in rows}
    show_aurc = any(value is not None for value in aurc.values())
    head = ["test set", "method", *ABSTENTION_COLUMNS.values(), *(["AURC"] if show_aurc else [])]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * (len(head) - 2)]
    for entry in frame.to_dict("records"):
        cells = [_percent_cell(entry.get(key)) for key in ABSTENTION_COLUMNS]
        if show_aurc:
            value = aurc.get((entry["test_set"], entry["method"]))
            cells.append("–" if value is None else f"{value:.3f}")
        lines.append(f"| {entry['test_set']} ({entry['domain']}) | {entry['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _percent_cell(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.1f}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _grid(rows: Sequence[dict], reference: str) -> tuple[list[ColumnGroup], list[str], list[list[Cell]]]:
    """Column groups, methods, and the cells of the Table-2 layout (methods × groups × Pc, Pw, THS)."""
    rows = check_rows(rows)
    columns = order_test_sets(rows)
    methods = order_methods(row["method"] for row in rows)
    by_pair = {(row["test_set"], row["method"]): row for row in rows}
    cells = [[cell_parts(by_pair.get((c.test_set, m)), key, reference) for c in columns for key in TABLE_METRICS]
             for m in methods]
    return columns, methods, cells


def markdown_table(rows: Sequence[dict], reference: str = REFERENCE) -> str:
    """The Table-2 layout as a Markdown table: one row per method, Pc | Pw | THS per test set."""
    columns, methods, cells = _grid(rows, reference)
    header = ["method"] + [f"{c.label} {METRIC_LABELS[k]}" for c in columns for k in TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for method, parts in zip(methods, cells):
        texts = [" ".join(p for p in cell if p) for cell in parts]
        lines.append("| " + " | ".join([method, *texts]) + " |")
    return "\n".join(lines)


def html_table(rows: Sequence[dict], reference: str = REFERENCE) -> str:
    """The same table as HTML: header cells span their track and test set; intervals in a small second line."""
    columns, methods, cells = _grid(rows, reference)
    header = pd.MultiIndex.from_tuples(
        [(html.escape(c.track or ""), html.escape(c.label), METRIC_LABELS[k]) for c in columns for k in TABLE_METRICS])
    texts = [[html.escape(value) + (f'<span class="ci">{interval}</span>' if interval else "")
              for value, interval in row] for row in cells]
    frame = pd.DataFrame(texts, index=[html.escape(m) for m in methods], columns=header)
    return frame.to_html(border=0, classes="results", escape=False)


def test_set_lines(rows: Sequence[dict]) -> list[str]:
    """One line per test set: its track, domain, size and whether it is macro-averaged."""
    rows = check_rows(rows)
    lines = []
    for column in order_test_sets(rows):
        chosen = [row for row in rows if row["test_set"] == column.test_set]
        sizes = sorted({row["n"] for row in chosen if row.get("n") is not None})
        size = "" if not sizes else f"n = {sizes[0]}" if len(sizes) == 1 else f"n = {sizes[0]}–{sizes[-1]}"
        macro = next((row["macro_over"] for row in chosen if row.get("macro_over")), None)
        details = [d for d in (column.track, column.domain, size, macro and f"macro-averaged over {macro}s") if d]
        lines.append(f"{column.test_set}: {', '.join(details)}" if details else column.test_set)
    return lines


def legend(reference: str = REFERENCE) -> str:
    """What the numbers in the table mean."""
    return (
        f"Pc (correct), Pw (wrong) and THS in percent; value [low, high] is the 95 % percentile bootstrap interval "
        f"over items. THS (Truthful Helpfulness Score) is measured against {reference} on the same items: "
        f"0 on the line through the origin and {reference}'s (Pc, Pw), positive when the ratio of right to wrong "
        f"answers beats the reference's, 100 for a model that is always right; '{NOT_COMPARED}' marks the "
        f"reference itself, '{UNDEFINED}' an undefined THS (the reference made no wrong answer), a blank cell "
        f"a method not run on that test set. Test sets marked macro-averaged (MMLU) weigh every subject "
        f"equally, as in the papers."
    )
