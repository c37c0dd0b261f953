"""The report: Table-2 ordering, the Markdown/CSV/HTML outputs and the two PNG figures."""

from __future__ import annotations

import base64
import re

import pandas as pd
import pytest

from rait.errors import RaitError
from rait.report import ReportSettings, markdown_table, order_methods, order_test_sets, pc_pw_plot, ths_bars
from rait.report import run as write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metric(value, low, high):
    return {"value": value, "low": low, "high": high}


def _row(test_set, domain, method, pc, pw, **extra):
    rest = 100 - pc["value"] - pw["value"]
    return {"track": "oeqa", "test_set": test_set, "domain": domain, "method": method, "n": 200, "macro_over": None,
            "pc": pc, "pw": pw, "pr": _metric(rest, 0.0, 100.0), "pu": _metric(0.0, 0.0, 0.0), "seconds": 3.5, **extra}


@pytest.fixture(scope="module")
def rows():
    """2 test sets (OOD given first) × 4 methods (out of table order, one unknown); Van-Tuning's THS undefined."""
    rows = []
    for test_set, domain, s in (("nq", "OOD", 0.0), ("facts", "ID", 10.0)):
        rows += [
            _row(test_set, domain, "My-Method", _metric(20.0 + s, 15.0 + s, 25.0 + s), _metric(30.0, 25.0, 35.0),
                 ths=_metric(4.0, 1.0, 7.0)),
            _row(test_set, domain, "CRaFT", _metric(41.23 + s, 38.0 + s, 44.96 + s), _metric(12.0, 9.04, 15.5),
                 ths=_metric(27.5, 22.25, 31.0)),
            _row(test_set, domain, "Init-Basic", _metric(50.0 + s, 45.0 + s, 55.0 + s),
                 _metric(50.0 - s, 45.0 - s, 55.0 - s)),
            _row(test_set, domain, "Van-Tuning", _metric(52.0 + s, 47.0 + s, 57.0 + s), _metric(48.0, 43.0, 53.0),
                 ths=None),
        ]
    return rows


@pytest.fixture(scope="module")
def report(rows, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(ReportSettings(title="Demo <run>", notes={"model": "tiny", "wall time": "12 s"}), rows, out)
    return out, paths


def test_methods_follow_table_2_then_unknown_methods_in_given_order():
    given = ["GRAIT", "Zeta", "CRaFT w/o Cer", "R-Tuning", "Alpha", "CorCer-RAIT", "CRaFT", "Init-Refuse",
             "Van-Tuning", "Cor-RAIT", "Init-Basic", "Zeta"]
    assert order_methods(given) == ["Init-Basic", "Init-Refuse", "Van-Tuning", "Cor-RAIT", "CRaFT", "CorCer-RAIT",
                                    "CRaFT w/o Cer", "R-Tuning", "GRAIT", "Zeta", "Alpha"]


def test_method_aliases_share_their_table_2_slot():
    assert order_methods(["craft_wo_cer", "w/o Flow", "cor_rait", "init_basic"]) == [
        "init_basic", "cor_rait", "w/o Flow", "craft_wo_cer"]


def test_test_sets_keep_track_order_with_id_before_ood():
    given = [("arc", "mcqa", "OOD"), ("nq", "oeqa", "OOD"), ("mmlu", "mcqa", "ID"), ("tqa", "oeqa", "ID"),
             ("x", "mcqa", None)]
    rows = [{"test_set": name, "track": track, "domain": domain} for name, track, domain in given]
    assert [c.test_set for c in order_test_sets(rows)] == ["mmlu", "arc", "x", "tqa", "nq"]


def test_a_test_set_with_two_domains_is_refused():
    with pytest.raises(RaitError, match="two track/domain"):
        order_test_sets([{"test_set": "nq", "domain": "ID"}, {"test_set": "nq", "domain": "OOD"}])


def test_report_writes_every_file_and_no_temporary_ones(report):
    out, paths = report
    assert sorted(p.name for p in out.iterdir()) == ["pc_pw.png", "report.html", "results.csv", "results.md", "ths.png"]
    assert all(paths[name].stat().st_size > 0 for name in ("csv", "md", "pc_pw", "ths", "html"))


def _markdown_table(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_markdown_is_the_table_2_layout_with_intervals(report):
    table = _markdown_table(report[1]["md"].read_text(encoding="utf-8"))
    header, body = table[0], table[2:]
    assert header == ["method", "facts (ID) Pc", "facts (ID) Pw", "facts (ID) THS",
                      "nq (OOD) Pc", "nq (OOD) Pw", "nq (OOD) THS"]
    assert [line[0] for line in body] == ["Init-Basic", "Van-Tuning", "CRaFT", "My-Method"]
    craft = body[2]
    assert craft[4:7] == ["41.2 [38.0, 45.0]", "12.0 [9.0, 15.5]", "27.5 [22.2, 31.0]"]
    assert body[0][3] == "ref." and body[1][3] == "–"


def test_a_method_missing_from_a_test_set_leaves_blank_cells(rows):
    partial = [row for row in rows if (row["method"], row["test_set"]) != ("CRaFT", "nq")]
    craft = next(line for line in _markdown_table(markdown_table(partial)) if line[0] == "CRaFT")
    assert craft[1] == "51.2 [48.0, 55.0]" and craft[4:7] == ["", "", ""]


def test_markdown_has_title_notes_test_sets_and_legend(report):
    text = report[1]["md"].read_text(encoding="utf-8")
    assert text.startswith("# Demo <run>\n")
    assert "- **wall time**: 12 s" in text
    assert "- facts: oeqa, ID, n = 200" in text
    assert "95 % percentile bootstrap" in text and "Init-Basic" in text and "macro-averaged" in text


def test_csv_round_trips_with_pandas(rows, report):
    table = pd.read_csv(report[1]["csv"])
    assert list(table[["test_set", "method"]].itertuples(index=False, name=None)) == [
        (t, m) for t in ("facts", "nq") for m in ("Init-Basic", "Van-Tuning", "CRaFT", "My-Method")]
    by_pair = {(r["test_set"], r["method"]): r for r in rows}
    for record in table.to_dict("records"):
        row = by_pair[(record["test_set"], record["method"])]
        assert (record["track"], record["domain"], record["n"], record["seconds"]) == (
            row["track"], row["domain"], row["n"], row["seconds"])
        for key in ("pc", "pw", "pr", "pu"):
            assert [record[key], record[f"{key}_low"], record[f"{key}_high"]] == pytest.approx(
                [row[key]["value"], row[key]["low"], row[key]["high"]])
        if row.get("ths") is None:
            assert table.loc[(table.test_set == row["test_set"]) & (table.method == row["method"]), "ths"].isna().all()
        else:
            assert record["ths_low"] == pytest.approx(row["ths"]["low"])


def test_html_is_self_contained_and_embeds_the_figures(report):
    paths = report[1]
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r"(?i)https?:|//cdn|<link|<script", page)
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [paths["pc_pw"].read_bytes(), paths["ths"].read_bytes()]
    assert "Demo &lt;run&gt;" in page and "wall time" in page and "Generated " in page
    assert page.index(">Init-Basic<") < page.index(">Van-Tuning<") < page.index(">CRaFT<") < page.index(">My-Method<")
    assert '41.2<span class="ci">[38.0, 45.0]</span>' in page


@pytest.mark.parametrize("draw", [pc_pw_plot, ths_bars])
def test_each_plot_can_be_drawn_alone_as_a_png(draw, rows, tmp_path):
    path = draw(rows, tmp_path / "figure.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_the_plane_without_a_reference_run_still_draws(rows, tmp_path):
    without_reference = [row for row in rows if row["method"] != "Init-Basic"]
    assert pc_pw_plot(without_reference, tmp_path / "plane.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows + [rows[0]], "two result rows"),
    (lambda rows: [{**rows[0], "pw": None}] + rows[1:], "lacks pw"),
    (lambda rows: [{**rows[0], "pc": {"value": 1.0}}] + rows[1:], "needs value, low and high"),
    (lambda rows: [], "no result rows"),
])
def test_bad_rows_are_refused_before_anything_is_written(change, message, rows, tmp_path):
    with pytest.raises(RaitError, match=message):
        write_report(ReportSettings(), change(list(rows)), tmp_path / "out")
    assert not (tmp_path / "out").exists()



def test_the_truthfulness_and_abstention_table_appears_only_with_its_metrics(rows, tmp_path):
    more = {"accuracy": 40.0, "abstention": 35.0, "hallucination": 25.0, "truthfulness": 15.0, "over_refusal": 12.5,
            "prudence": float("nan")}
    with_metrics = [dict(row, abstention=more, **({"aurc": 0.25} if row["method"] == "CRaFT" else {})) for row in rows]
    paths = write_report(ReportSettings(), with_metrics, tmp_path / "with")
    text = paths["md"].read_text()
    assert "## Truthfulness and abstention" in text and "truthfulness (acc − hall)" in text
    assert "| facts (ID) | CRaFT | 40.0 | 35.0 | 25.0 | 15.0 | 12.5 | – | 0.250 |" in text  # NaN prudence: –
    assert "Truthfulness and abstention" in paths["html"].read_text()
    assert len(paths["abstention"].read_text().splitlines()) == len(rows) + 1
    plain = write_report(ReportSettings(), rows, tmp_path / "without")
    assert "Truthfulness" not in plain["md"].read_text() and "abstention" not in plain


def test_explorer_items_pair_each_answer_with_init_basic_and_name_the_transition():
    from rait.report.explorer import explorer_html, explorer_items

    def outcome_rows(outcomes, output="x"):
        return [{"id": f"q{i}", "question": f"Q{i}?", "gold": "g", "output": output, "outcome": o}
                for i, o in enumerate(outcomes)]

    rows = [
        {"track": "t", "test_set": "s", "method": "Init-Basic",
         "outcome_rows": outcome_rows(["correct", "wrong", "refused", "correct", "wrong", "unparsed"])},
        {"track": "t", "test_set": "s", "method": "M",  # two seeds: the first one's answers are shown
         "outcome_runs": [outcome_rows(["refused", "refused", "correct", "wrong", "correct", "unparsed"], "</script>"),
                          outcome_rows(["correct"] * 6)]},
    ]
    items = explorer_items(rows)
    assert [item["answers"]["M"][2] for item in items] == [
        "correct-refused", "wrong-refused", "wrong-correct", "correct-wrong", "wrong-correct", "wrong-wrong"]
    assert items[0]["init"] == ["x", "correct"] and items[0]["question"] == "Q0?"
    page = explorer_html(items)
    assert "</script>" not in page.split('id="x-data">')[1].split("</script>")[0]  # an answer cannot end the data
    assert explorer_html([]) == ""
