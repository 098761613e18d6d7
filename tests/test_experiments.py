"""The studies: the format x position sweep, the tasks, the digit study, the arms' tables and plots
(the learner in stage 5's loop: test_reach.py)."""

import json
import shutil

import pytest
from conftest import run

from cot_data import near_miss
from experiments.digits import handed, study
from experiments.study import reach
from experiments.sweep import SweepConfig, smart_run


def test_reach_is_the_first_length_below_90_percent_over_N():
    assert reach({"1": 1.0, "2": 0.95, "3": 0.9, "4": 0.89, "5": 1.0}, 2) == 1.5
    assert reach({"1": 0.5, "2": 1.0}, 2) == 0.0
    assert reach({"1": 1.0, "2": 1.0}, 1) == 2.0


def test_near_miss_counts_wrong_digits_of_same_length_answers():
    assert near_miss("12345", "12045") and near_miss("12345", "10305")
    assert (
        not near_miss("12345", "10300")
        and not near_miss("1234", "12345")
        and not near_miss(None, "1")
    )
    assert not near_miss("12345", "12345")  # the right answer is not a near miss


def test_one_sweep_cell_reports_every_length_to_3N(tmp_path):
    cfg = SweepConfig(
        out_dir=str(tmp_path), task="add", max_digits=2, steps=20, eval_size=4, seed=1
    )
    r = smart_run(("compact", "rope", "small"), cfg)
    assert sorted(map(int, r["accuracy"])) == list(range(1, 7))
    assert r["params"] > 0 and r["reach"] == reach(r["accuracy"], 2)
    assert smart_run(("compact", "rope", "small"), cfg) == json.loads(
        json.dumps(r)
    )  # reused, not retrained


def test_sweep_refuses_an_unknown_cell(tmp_path):
    r = run("-m", "experiments.sweep", "--only=reverse-nope", f"--out_dir={tmp_path}")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such cell" in r.stderr


def test_arms_summary_gives_mean_and_spread_over_seeds():
    from experiments.arms import mean_spread, summary

    assert mean_spread([0.5]) == "50.0" and mean_spread([0.4, 0.6, 0.5]) == "50.0 ± 10.0"

    def run(acc, fixed):
        models = {
            m: {"accuracy": {"3": acc, "4": acc / 2}}
            for m in ("smart", "learner_on_smart", "expert_iteration", "learner_no_attempt")
        }
        verdict = {
            "fixed": {
                "learner_on_smart": fixed,
                "expert_iteration": 0.2,
                "learner_no_attempt": 0.3,
                "learner": 0.4,
            },
            "broken": {"learner_on_smart": 0.1},
            "anatomy": {"learner_on_smart": {"cot_wrong": 0.5}},
        }
        models["learner_on_smart"]["records"] = [
            {"digits": 3, "correct": False, "answer": "12345", "operands": [1, 2]},
            {"digits": 3, "correct": False, "answer": "4", "operands": [1, 2]},
        ]
        probe = {"learner o right": {"smart wrong": fixed / 2}}
        return {"models": models, "verdict": verdict, "task": "add", "probe": probe}

    text = summary({"answer": [run(0.8, 0.1), run(0.6, 0.3)]}, 2, [3, 4])
    assert (
        "| answer | 2 | 70.0 ± 10.0 | 35.0 ± 5.0 | 52.5 ± 7.5 | 52.5 ± 7.5 | 52.5 ± 7.5 | 20.0 ± "
        "10.0 | 10.0 ± 0.0 | 20.0 ± 0.0 | 30.0 ± 0.0 | 50.0 ± 0.0 "
        "| 50 | 10.0 ± 5.0 | 40.0 ± 0.0 |"
    ) in text


def test_tasks_study_tables_a_finished_run(pipeline, tmp_path):
    """experiments/tasks.py reuses a task whose run is done and tables what it gives past N."""

    (tmp_path / "add").mkdir()
    shutil.copy(pipeline / "results.json", tmp_path / "add" / "results.json")
    (tmp_path / "add" / "seconds.json").write_text(
        json.dumps({"train": 1, "corrupt": 2, "improve": 3, "evaluate": 4})
    )
    r = run("-m", "experiments.tasks", f"--out_dir={tmp_path}", "--tasks=add")
    assert r.returncode == 0, r.stderr[-2000:]
    table = (tmp_path / "results.md").read_text()
    assert "| add (reverse) | 2 |" in table and "1 + 2 + 3 + 4 = 10" in table
    d = json.load(open(tmp_path / "results.json"))["tasks"]["add"]
    assert (
        set(d["accuracy"]["smart"]) == {"1", "2", "3"} and d["verdict"]["smart_wrong_past_N"] >= 0
    )
    assert (
        "no task 'div'"
        in run("-m", "experiments.tasks", f"--out_dir={tmp_path}", "--tasks=add,div").stderr
    )


def test_digit_study_names_the_slip_of_each_wrong_digit():
    """58+67=125; reversed 85+76, carries 0,1,1, answer digits 5,2,1. Past N=1, carry row right."""

    def rec(answer):
        return {
            "digits": 2,
            "operands": [58, 67],
            "correct": False,
            "completion": "011;#" + answer + "$",
        }

    ahead = study([rec("221")], 1)  # column 0 wrote column 1's digit
    assert (
        ahead["digits"] == 1 and ahead["inside"] == 1 and ahead["hits"]["next column's digit"] == 1
    )
    assert ahead["hits"]["previous column's digit"] == 0
    behind = study([rec("551")], 1)  # column 1 wrote column 0's digit
    assert behind["hits"]["previous column's digit"] == 1 and behind["inside"] == 0
    carry = study([rec("621")], 1)  # 8+7 with column 1's carry (1) instead of 0 -> 6
    assert carry["hits"]["carry of a neighbour"] == 1
    assert study([rec("5210")], 1)["wrong length"] == 1 and study([rec("521")], 1)["digits"] == 0
    # a wrong carry row: another kind of mistake
    wrong_row = study([{**rec("221"), "completion": "001;#221$"}], 1)
    assert wrong_row["digits"] == 0
    assert 0 < study([rec("921")], 1)["chance"]["operand of a neighbour"] < 1


def test_digit_study_says_what_the_learner_did_with_smart_answers():
    def rec(answer, ok):
        return {"digits": 2, "answer": answer, "correct": ok}

    smart = [
        rec("125", True),
        rec("125", True),
        rec("135", False),
        rec("135", False),
        rec("135", False),
    ]
    learner = [
        rec("125", True),
        rec("126", False),
        rec("125", True),
        rec("135", False),
        rec("134", False),
    ]
    assert handed(smart, learner, 1) == ([1, 1, 1], [1, 1])
    assert handed(smart, learner, 2) == ([0, 0, 0], [0, 0])  # nothing past N=2


def test_arms_plot_has_a_bar_per_model_and_arm():
    pytest.importorskip("matplotlib")
    from experiments.arms import plot

    def run(fixed):
        verdict = {
            "fixed": {
                "learner_on_smart": fixed,
                "expert_iteration": 0.2,
                "learner_no_attempt": 0.3,
                "learner": 0.1,
            },
            "broken": {
                "learner_on_smart": 0.4,
                "expert_iteration": 0.1,
                "learner_no_attempt": 0.1,
                "learner": 0.3,
            },
        }
        return {
            "verdict": verdict,
            "probe": {"learner o right": {"smart wrong": 0.05, "smart right": 0.6}},
        }

    fig = plot({"a": [run(0.1), run(0.3)], "b": [run(0.5)]}, 8)
    left, right = fig.axes[:2]
    assert len(left.patches) == 5 * 2 and len(right.patches) == 4 * 2
    assert [round(p.get_height()) for p in left.patches[:2]] == [
        20,
        50,
    ]  # learner o smart: mean over seeds
    assert [round(p.get_height()) for p in right.patches[2:4]] == [30, 30]  # handed nothing, broken
