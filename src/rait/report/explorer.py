"""The report's item explorer: every test item with Init-Basic's answer and each method's, and what changed.

A results table says which method scores best; the next question is which questions a tuned model now refuses
that the untouched model answered right (over-refusal) and which wrong answers it turned into refusals (a
hallucination avoided). `explorer_items` gathers the answers from the evaluation rows, `explorer_html` writes
them into report.html with filters by test set, method, outcome and transition, and the count of every
transition per method. The page needs no network: the items are embedded as JSON and filtered by a short
script; the filters live in the address (`report.html#test=facts-id&method=Cor-RAIT&transition=correct-refused`),
so a view can be linked. With several training seeds the explorer shows the first seed's answers.
"""

from __future__ import annotations

import html
import json
from typing import Sequence

from rait.evaluate.metrics import transition
from rait.report.results import REFERENCE

# the keys of `rait.evaluate.metrics.transition`, as the page names them
TRANSITIONS = {
    "correct-refused": "correct → refused (over-refusal)",
    "wrong-refused": "wrong → refused (hallucination avoided)",
    "wrong-correct": "wrong → correct",
    "correct-wrong": "correct → wrong",
    "correct-correct": "correct → correct",
    "wrong-wrong": "wrong → wrong",
}
OUTCOMES = ("correct", "refused", "wrong")


def explorer_items(rows: Sequence[dict], reference: str = REFERENCE) -> list[dict]:
    """One entry per test item: question, gold, Init-Basic's answer and every other row's answer, outcome and
    transition. `rows` are evaluation rows carrying `outcome_rows` (or `outcome_runs`, one list per seed)."""
    def answers(row: dict) -> list[dict]:
        return (row.get("outcome_runs") or [row.get("outcome_rows") or []])[0]

    items = []
    references = {(r["track"], r["test_set"]): answers(r) for r in rows if r["method"] == reference and answers(r)}
    for (track, test_set), reference_rows in references.items():
        methods = [(r["method"], {a["id"]: a for a in answers(r)}) for r in rows
                   if (r["track"], r["test_set"]) == (track, test_set) and r["method"] != reference and answers(r)]
        for before in reference_rows:
            entry = {"track": track, "test_set": test_set, "id": before["id"], "question": before.get("question", ""),
                     "gold": before.get("gold") or "", "init": [before.get("output", ""), before["outcome"]],
                     "answers": {}}
            for method, by_id in methods:
                after = by_id.get(before["id"])
                if after is not None:
                    entry["answers"][method] = [after.get("output", ""), after["outcome"],
                                                transition(before["outcome"], after["outcome"])]
            items.append(entry)
    return items


def explorer_html(items: Sequence[dict], reference: str = REFERENCE) -> str:
    """The explorer's section of report.html (empty without items)."""
    if not items:
        return ""
    data = script_json({"items": list(items), "transitions": TRANSITIONS, "reference": reference})
    options = "".join(f'<option value="{key}">{html.escape(label)}</option>' for key, label in TRANSITIONS.items())
    outcomes = "".join(f'<option value="{o}">{o}</option>' for o in OUTCOMES)
    return f"""<h2 id="items">Items</h2>
<p class="legend">Every test item with {html.escape(reference)}'s answer and a method's; a transition is
{html.escape(reference)}'s outcome → the method's ({html.escape(reference)}'s refused and unparsed answers count as
wrong: not known). The counts are the selected test set's, per method; the filters are kept in the page's
address, so a view can be linked. With several training seeds, the first seed's answers.</p>
<div id="explorer">
<label>Test set <select id="x-test"></select></label>
<label>Method <select id="x-method"></select></label>
<label>Outcome <select id="x-outcome"><option value="">any</option>{outcomes}</select></label>
<label>Transition <select id="x-transition"><option value="">any</option>{options}</select></label>
<div class="scroll"><table id="x-counts"></table></div>
<p id="x-shown" class="legend"></p>
<div class="scroll"><table id="x-items" class="items"><thead><tr><th>question</th><th>gold</th>
<th>{html.escape(reference)}</th><th>method's answer</th><th>outcome</th><th>transition</th></tr></thead>
<tbody></tbody></table></div>
</div>
<script type="application/json" id="x-data">{data}</script>
<script>{SCRIPT}</script>
"""


def script_json(data) -> str:
    """`data` as JSON to embed in a <script> element: `<`, `>` and `&` as \\u escapes, which JSON.parse reads back,
    so that no text can close the element (`</script>`) or open an HTML comment in it (`<!--<script>`, after which
    a browser ignores the closing tag and the explorer is left empty)."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById("x-data").textContent);
  const $ = (id) => document.getElementById(id);
  const keys = Object.keys(data.transitions);
  const tests = [...new Set(data.items.map((i) => i.test_set))];
  const fill = (select, values) => values.forEach((v) => select.add(new Option(v, v)));
  fill($("x-test"), tests);
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("test")) document.getElementById("items").scrollIntoView();  // a linked view opens at the explorer
  const methodsOf = (test) => [...new Set(data.items.filter((i) => i.test_set === test)
                                          .flatMap((i) => Object.keys(i.answers)))];
  function setMethods() {
    const select = $("x-method"), keep = select.value || params.get("method");
    select.length = 0;
    fill(select, methodsOf($("x-test").value));
    if (keep && [...select.options].some((o) => o.value === keep)) select.value = keep;
  }
  for (const [name, id] of [["test", "x-test"], ["outcome", "x-outcome"], ["transition", "x-transition"]]) {
    const value = params.get(name);
    if (value !== null && [...$(id).options].some((o) => o.value === value)) $(id).value = value;
  }
  setMethods();
  const cell = (tag, text, attrs) => {
    const el = document.createElement(tag);
    el.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  };
  function render() {
    const test = $("x-test").value, method = $("x-method").value;
    const outcome = $("x-outcome").value, move = $("x-transition").value;
    const here = data.items.filter((i) => i.test_set === test);
    const counts = $("x-counts");
    counts.textContent = "";
    const head = counts.createTHead().insertRow();
    head.appendChild(cell("th", "method"));
    keys.forEach((k) => head.appendChild(cell("th", data.transitions[k])));
    const body = counts.createTBody();
    for (const m of methodsOf(test)) {
      const row = body.insertRow();
      row.appendChild(cell("th", m));
      for (const k of keys) {
        const n = here.filter((i) => i.answers[m] && i.answers[m][2] === k).length;
        row.appendChild(cell("td", String(n), {"data-method": m, "data-transition": k}));
      }
    }
    const shown = here.filter((i) => i.answers[method] && (!outcome || i.answers[method][1] === outcome)
                                     && (!move || i.answers[method][2] === move));
    $("x-shown").textContent = shown.length + " of " + here.length + " items of " + test;
    const tbody = $("x-items").tBodies[0];
    tbody.textContent = "";
    for (const i of shown) {
      const row = tbody.insertRow();
      row.setAttribute("data-id", i.id);
      const [answer, result, change] = i.answers[method];
      [i.question, i.gold, i.init[0] + " (" + i.init[1] + ")", answer, result, data.transitions[change]]
        .forEach((text) => row.appendChild(cell("td", text)));
    }
    const state = new URLSearchParams({test: test, method: method});
    if (outcome) state.set("outcome", outcome);
    if (move) state.set("transition", move);
    try { history.replaceState(null, "", "#" + state.toString()); } catch (e) { /* a browser that refuses it */ }
  }
  $("x-test").addEventListener("change", () => { setMethods(); render(); });
  for (const id of ["x-method", "x-outcome", "x-transition"]) $(id).addEventListener("change", render);
  render();
})();
"""
