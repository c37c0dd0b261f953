"""The report: the papers' Table 2 with intervals, the Pc–Pw plane, THS bars, one HTML page.

`run(ReportSettings(title=..., notes=...), rows, out_dir)` writes everything (the report stage); `pc_pw_plot` and
`ths_bars` draw one figure each; `results_frame` and `markdown_table` give the table alone.
Rows are one (method, test set) evaluation each (see `rait.report.results`).
"""

from __future__ import annotations

from rait.report.page import ReportSettings, report_html, report_markdown, run
from rait.report.plots import pc_pw_plot, ths_bars
from rait.report.results import (
    REFERENCE,
    ColumnGroup,
    format_interval,
    html_table,
    markdown_table,
    method_key,
    order_methods,
    order_test_sets,
    results_frame,
)

__all__ = [
    "ReportSettings",
    "REFERENCE",
    "ColumnGroup",
    "format_interval",
    "html_table",
    "markdown_table",
    "method_key",
    "order_methods",
    "order_test_sets",
    "pc_pw_plot",
    "report_html",
    "report_markdown",
    "results_frame",
    "run",
    "ths_bars",
]
