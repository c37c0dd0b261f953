"""The report's knowledge view of a training pool: what the probe found and what each method selected.

Per track: the histograms of correctness μ and certainty σ over the pool (the probe's knowledge table,
docs/probe.md), CRaFT's knowledge flow Δμ where the run rehearsed (docs/train.md), and, per relation or
subject, how many questions each method took as vanilla (answer) and as "I don't know" samples — the
selections CRaFT and GRAIT differ by (docs/select.md).
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pool_knowledge(track: str, table, records: Sequence, selections: dict[str, Sequence[dict]]) -> dict:
    """One track's view: `table` the knowledge (or flow) table, `records` the pool, `selections` each method's
    training rows (`id`, `kind`) of the first seed."""
    subjects = {r.id: r.subject or "(none)" for r in records}
    selected = {}
    for method, rows in selections.items():
        counts = Counter((subjects.get(row["id"], "(none)"), row.get("kind", "vanilla")) for row in rows)
        by_subject: dict[str, dict[str, int]] = {}
        for (subject, kind), n in counts.items():
            by_subject.setdefault(subject, {})[kind] = n
        selected[method] = by_subject
    delta = table["delta_mu"].dropna().tolist() if "delta_mu" in table else []
    return {"track": track, "mu": table["mu"].tolist(), "sigma": table["sigma"].tolist(), "delta_mu": delta,
            "selected": selected}


def knowledge_plot(view: dict, path: str | Path) -> Path:
    """μ and σ histograms over the pool, and Δμ where there is a flow, side by side."""
    panels = [("mu", "correctness μ", (0, 1)), ("sigma", "certainty σ", (0, 1))] + (
        [("delta_mu", "knowledge flow Δμ", (-1, 1))] if view["delta_mu"] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0))
    for ax, (key, label, span) in zip(axes, panels):
        ax.hist(view[key], bins=20, range=span, color="#4c72b0")
        ax.set_xlabel(label)
        ax.set_ylabel("questions")
    fig.suptitle(f"{view['track']}: the training pool ({len(view['mu'])} questions)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def selection_html(view: dict) -> str:
    """Per relation or subject, each method's vanilla / IdK counts."""
    methods = sorted(view["selected"])
    if not methods:
        return ""
    subjects = sorted({subject for counts in view["selected"].values() for subject in counts})
    head = "".join(f"<th>{html.escape(m)}<br>vanilla / IdK</th>" for m in methods)
    body = []
    for subject in subjects:
        taken = [view["selected"][m].get(subject, {}) for m in methods]
        cells = "".join(f"<td>{t.get('vanilla', 0)} / {t.get('idk', 0)}</td>" for t in taken)
        body.append(f"<tr><th>{html.escape(subject)}</th>{cells}</tr>")
    return (f'<div class="scroll"><table class="selection"><thead><tr><th>relation or subject</th>{head}</tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")
