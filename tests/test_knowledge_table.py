import pandas as pd
import pytest

from rait.errors import DataError
from rait.probe.table import merge_flow, read_table, write_table


def _table(ids=("q1", "q2", "q3"), mu=(0.0, 0.5, 1.0)):
    return pd.DataFrame({"id": list(ids), "task": "oeqa", "mu": list(mu), "sigma": [0.2, 0.5, 0.9]})


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_roundtrip(tmp_path, suffix):
    path = write_table(_table(), tmp_path / f"k{suffix}")
    back = read_table(path)
    pd.testing.assert_frame_equal(back[["id", "task", "mu", "sigma"]], _table(), check_dtype=False)


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_float_written_is_the_float_read(tmp_path, suffix):
    # exact for values of at most 15 significant digits (JSONL keeps 15; Parquet every bit): pandas' default JSON
    # parser reads 0.095476 as 0.09547599999999999, and its default writer keeps 10 digits; both move ties and roundings
    mu = (0.095476, 0.565, 0.123456789012345)
    back = read_table(write_table(_table(mu=mu), tmp_path / f"k{suffix}"))
    assert back["mu"].tolist() == list(mu)


def test_merge_flow_matches_by_id_not_position():
    initial = _table()
    rehearsed = _table(ids=("q3", "q1", "q2"), mu=(0.7, 0.4, 0.5))  # shuffled rows
    flow = merge_flow(initial, rehearsed).set_index("id")
    assert flow.loc["q1", "delta_mu"] == pytest.approx(0.4)
    assert flow.loc["q2", "delta_mu"] == pytest.approx(0.0)
    assert flow.loc["q3", "delta_mu"] == pytest.approx(-0.3)


def test_merge_flow_requires_every_question():
    with pytest.raises(DataError, match="q3"):
        merge_flow(_table(), _table(ids=("q1", "q2", "x"), mu=(0, 0, 0)))


@pytest.mark.parametrize(
    "change, field",
    [({"mu": [0.0, 1.5, 1.0]}, "mu"), ({"id": ["a", "a", "b"]}, "id"), ({"task": ["oeqa", "qa", "oeqa"]}, "task")],
)
def test_bad_tables_name_line_and_field(tmp_path, change, field):
    bad = _table().assign(**change)
    with pytest.raises(DataError) as err:
        write_table(bad, tmp_path / "k.jsonl")
    assert err.value.field == field and err.value.line == 2
    assert not (tmp_path / "k.jsonl").exists()


def test_empty_file(tmp_path):
    (tmp_path / "k.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(tmp_path / "k.jsonl")
