"""The report stage (`run`): results.csv, results.md, the two PNG figures and a self-contained report.html.

The HTML page carries everything inline (figures as base64 data URIs, CSS in a <style>
element) so it can be mailed, committed or opened offline as one file.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from rait import __version__
from rait.artifacts import atomic_path
from rait.report.explorer import explorer_html
from rait.report.knowledge import knowledge_plot, selection_html
from rait.report.plots import pc_pw_plot, reward_plot, risk_coverage_plot, ths_bars
from rait.report.results import REFERENCE, abstention_frame, abstention_markdown, check_rows, html_table, legend, markdown_table, results_frame, test_set_lines

Notes = str | Mapping[str, Any] | None

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 76rem; padding: 0 1rem; color: #222; }
h1 { margin-bottom: 0.2rem; }
.meta, .legend { color: #555; font-size: 0.9rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.8rem 0; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; white-space: nowrap; }
td { text-align: right; font-variant-numeric: tabular-nums; }
thead th { text-align: center; background: #f4f4f4; }
tbody th { text-align: left; }
table.notes td { text-align: left; white-space: normal; }
.ci { display: block; font-size: 0.72rem; color: #777; }
.scroll { overflow-x: auto; }
img { max-width: 100%; display: block; margin: 0.8rem 0 1.6rem; }
table.items td { text-align: left; white-space: normal; vertical-align: top; }
#explorer label { margin-right: 1rem; font-size: 0.9rem; }
"""


def _note_items(notes: Notes) -> list[tuple[str, str]]:
    """A mapping of notes as (name, text) pairs; nested values as compact JSON."""
    if not isinstance(notes, Mapping):
        return []
    return [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)) for k, v in notes.items()]


def report_markdown(rows: Sequence[dict], title: str, notes: Notes = None, reference: str = REFERENCE) -> str:
    """results.md: title, notes, the Table-2 layout, the test sets and the legend."""
    parts = [f"# {title}"]
    if isinstance(notes, str) and notes.strip():
        parts.append(notes.strip())
    elif items := _note_items(notes):
        parts.append("\n".join(f"- **{name}**: {text}" for name, text in items))
    parts.append(markdown_table(rows, reference))
    parts.append("Test sets:\n" + "\n".join(f"- {line}" for line in test_set_lines(rows)))
    parts.append(legend(reference))
    if (abstention := abstention_markdown(rows)) is not None:
        parts += ["## Truthfulness and abstention", abstention, ABSTENTION_LEGEND]
    return "\n\n".join(parts) + "\n"


ABSTENTION_LEGEND = (
    "Percent of all items (point estimates; means over seeds where there are seeds). Accuracy, abstention and "
    "hallucination (any answer that is not correct) are TruthRL's triple and truthfulness its score with weights "
    "(1, 0, 1); over-refusal is the share of the items Init-Basic answered correctly that are refused, prudence the "
    "share of the others refused (Alignment for Honesty). AURC (lower is better): the area under the risk-coverage "
    "curve of Init-Basic's answers ranked by the row's confidence (risk_coverage.csv); every item's metric is in "
    "abstention.csv.")


def _abstention_html(rows: Sequence[dict]) -> str:
    """The truthfulness and abstention table as HTML (empty without those metrics)."""
    text = abstention_markdown(rows)
    if text is None:
        return ""
    head, _, *body = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()]
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    header = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    return (f'<h2>Truthfulness and abstention</h2><div class="scroll"><table><thead><tr>{header}</tr></thead>'
            f'<tbody>{cells}</tbody></table></div><p class="legend">{html.escape(ABSTENTION_LEGEND)}</p>')


def _risk_coverage_html(figures: Mapping[str, Path]) -> str:
    if "risk_coverage" not in figures:
        return ""
    return ('<h2>Risk and coverage</h2><p class="legend">Init-Basic\'s answers ranked by each rule\'s confidence: '
            "answering the most confident share (coverage), the share of those not correct (risk). The dotted line is "
            "the error rate, what a random ranking gives; AURC in the table above is the area under each curve.</p>"
            + _image(figures["risk_coverage"], "risk against coverage per confidence and test set"))


def _rewards_html(figures: Mapping[str, Path]) -> str:
    if "rewards" not in figures:
        return ""
    return ('<h2>GRPO-RAIT\'s training</h2><p class="legend">Per optimiser step, the shares of the sampled '
            "completions that were correct, refused and wrong, and their mean reward (rewards.jsonl in each GRPO "
            "training folder; docs/grpo.md).</p>" + _image(figures["rewards"], "GRPO outcome shares per step"))


def _notes_html(notes: Notes) -> str:
    if isinstance(notes, str):
        return "".join(f"<p>{html.escape(p.strip())}</p>" for p in notes.split("\n\n") if p.strip())
    items = _note_items(notes)
    if not items:
        return ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
    return f'<table class="notes"><tbody>{body}</tbody></table>'


def _image(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _knowledge_html(knowledge: Sequence[dict], figures: Mapping[str, Path]) -> str:
    if not knowledge:
        return ""
    parts = ["<h2>The training pool</h2>", '<p class="legend">What the probe found in each track\'s pool (μ: the share '
             "of its k samples that are correct; σ: how much they agree), CRaFT's knowledge flow Δμ after the "
             "rehearsal where the run rehearsed, and what each method selected per relation or subject as vanilla "
             "(answer) and \"I don't know\" samples (the first seed's selection).</p>"]
    for view in knowledge:
        parts.append(f"<h3>{html.escape(view['track'])}</h3>")
        parts.append(_image(figures[f"knowledge_{view['track']}"], f"μ, σ and Δμ over the {view['track']} pool"))
        parts.append(selection_html(view))
    return "\n".join(parts)


def report_html(rows: Sequence[dict], title: str, notes: Notes, figures: Mapping[str, Path],
                reference: str = REFERENCE, items: Sequence[dict] = (), knowledge: Sequence[dict] = ()) -> str:
    """report.html: the table, the legend and the figures (embedded), with the notes, a timestamp and the item
    explorer (`rait.report.explorer`) when `items` are given."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    test_sets = "".join(f"<li>{html.escape(line)}</li>" for line in test_set_lines(rows))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">Generated {stamp} by rait {__version__}</p>
{_notes_html(notes)}
<h2>Results</h2>
<div class="scroll">{html_table(rows, reference)}</div>
<ul class="legend">{test_sets}</ul>
<p class="legend">{html.escape(legend(reference))}</p>
<h2>The Pc–Pw plane</h2>
<p class="legend">Each method at (Pc, Pw) with 95 % intervals. The solid line is THS = 0; dotted lines mark
other THS values (labelled); lower right is better.</p>
{_image(figures["pc_pw"], "Pc against Pw per method and test set")}
<h2>THS</h2>
{_image(figures["ths"], "THS per method and test set with 95 % intervals")}
{_abstention_html(rows)}
{_risk_coverage_html(figures)}
{_rewards_html(figures)}
{_knowledge_html(knowledge, figures)}
{explorer_html(items, reference)}
</body>
</html>
"""


@dataclass
class ReportSettings:
    """The report's settings: its title, the notes under it (text, or a mapping such as a config summary and the
    wall time), and the reference row of THS (Init-Basic)."""

    title: str = "rait results"
    notes: Notes = None
    reference: str = REFERENCE
    # risk-coverage points of the rows that carry a confidence (`rait.evaluate.abstain.risk_coverage`)
    curves: Sequence[dict] = ()
    # the item explorer's entries (`rait.report.explorer.explorer_items`)
    items: Sequence[dict] = ()
    # each track's view of its training pool (`rait.report.knowledge.pool_knowledge`)
    knowledge: Sequence[dict] = ()
    # GRPO-RAIT's steps: reward and outcome shares per optimiser step (`rait.train.grpo`'s rewards.jsonl)
    rewards: Sequence[dict] = ()


def run(settings: ReportSettings, rows: Sequence[dict], out: str | Path) -> dict[str, Path]:
    """The report stage: results.csv, results.md, pc_pw.png, ths.png and report.html in `out`; returns their paths.

    Rows that carry the abstention metrics (every `rait run` evaluation) also give abstention.csv;
    `settings.curves` give risk_coverage.png (in the page) and risk_coverage.csv.

    `rows` are result rows as described in `rait.report.results`.
    """
    title, notes, reference = settings.title, settings.notes, settings.reference
    rows = check_rows(rows)
    out = Path(out)
    paths = {name: out / file for name, file in [("csv", "results.csv"), ("md", "results.md"),
                                                      ("pc_pw", "pc_pw.png"), ("ths", "ths.png"),
                                                      ("html", "report.html")]}
    with atomic_path(paths["csv"]) as tmp:
        results_frame(rows).to_csv(tmp, index=False)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(report_markdown(rows, title, notes, reference), encoding="utf-8")
    pc_pw_plot(rows, paths["pc_pw"], reference)
    ths_bars(rows, paths["ths"], reference)
    if settings.curves:
        import pandas as pd

        paths["risk_coverage"] = risk_coverage_plot(settings.curves, out / "risk_coverage.png")
        paths["risk_coverage_csv"] = out / "risk_coverage.csv"
        with atomic_path(paths["risk_coverage_csv"]) as tmp:
            pd.DataFrame(list(settings.curves)).to_csv(tmp, index=False)
    if settings.rewards:
        paths["rewards"] = reward_plot(settings.rewards, out / "grpo_rewards.png")
    for view in settings.knowledge:
        paths[f"knowledge_{view['track']}"] = knowledge_plot(view, out / f"knowledge_{view['track']}.png")
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(report_html(rows, title, notes, paths, reference, settings.items, settings.knowledge),
                       encoding="utf-8")
    abstention = abstention_frame(rows)
    if abstention is not None:
        paths["abstention"] = out / "abstention.csv"
        with atomic_path(paths["abstention"]) as tmp:
            abstention.to_csv(tmp, index=False)
    return paths
