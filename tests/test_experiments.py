"""The studies: the format x position sweep, the reach of self-labelling vs the learner, the tasks,
the digit study, the arms' tables and plots."""

import itertools
import json
import random
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import run

from cot_data import eval_set, near_miss
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


def test_a_label_is_kept_when_enough_models_write_it_and_it_is_long_enough():
    from experiments.reach import vote

    votes = [
        ["00;#12$", "1;#9$", "00;#55$", "0;#1$"],  # model 1's completion of each of four problems
        ["00;#12$", "1;#9$", "00;#56$", "0;#1$"],
        ["00;#12$", "1;#8$", "00;#55$", "0;#1$"],
    ]
    assert vote(range(4), votes, 3, 6) == [(0, "00;#12$")]  # all three agree
    assert vote(range(4), votes, 2, 6) == [
        (0, "00;#12$"),
        (2, "00;#55$"),
    ]  # "1;#9$" and "0;#1$" are too short
    assert vote(range(4), votes, 2, 1) == [
        (0, "00;#12$"),
        (1, "1;#9$"),
        (2, "00;#55$"),
        (3, "0;#1$"),
    ]
    assert vote(range(4), votes, 3, 6, max_number=2) == [(0, "00;#12$")]
    assert vote(range(4), votes, 3, 6, max_number=1) == []  # "12": a number the models cannot hold


def tiny_reach(monkeypatch):
    """experiments.reach with tiny smarts (trained for seconds) and a tiny improve.py recipe."""
    from experiments import reach

    train_ = reach.train.train

    def tiny(cfg, noise=None):
        cfg.steps, cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden = 300, 32, 2, 2, 64
        cfg.lr, cfg.abacus_offset = 3e-3, 2
        return train_(cfg, noise)

    monkeypatch.setattr(reach.train, "train", tiny)
    improve_cfg = reach.improve.ImproveConfig

    def tiny_improve(**kw):
        return improve_cfg(problems=48, steps=6, attempt_temperature=3.0, **kw)

    monkeypatch.setattr(reach.improve, "ImproveConfig", tiny_improve)
    return reach


TINY_REACH = ["--max_digits=2", "--problems=24", "--steps=2", "--agree=2", "--plot=0"]


def test_the_reach_loop_runs_every_arm_on_tiny_models(tmp_path, monkeypatch):
    """Three tiny smarts (and their stupids and learners) label a round in each arm; the labels a
    round keeps are the models' votes, read against the truth only to count the right ones."""
    reach = tiny_reach(monkeypatch)
    labelled, events = [], []
    tune, corrupt_ = reach.tune, reach.corrupt.main

    def logged_tune(model, newest, *a, **kw):
        labelled.append(newest)
        events.append("tune")
        return tune(model, newest, *a, **kw)

    def logged_corrupt(argv):
        events.append("corrupt")
        return corrupt_(argv)

    monkeypatch.setattr(reach, "tune", logged_tune)
    monkeypatch.setattr(reach.corrupt, "main", logged_corrupt)
    arms = "--arms=self,corrector,step,filter"
    reach.main([f"--out_dir={tmp_path}", "--rounds=1", "--ahead=1", arms, *TINY_REACH])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["arm"], r["round"]) for r in rows][:2] == [("self", 0), ("self", 1)]
    assert {r["arm"] for r in rows} == {"self", "corrector", "step", "filter"}
    assert all("pairs" not in r for r in rows if r["arm"] == "filter")  # a checker is not taught
    so_far = json.loads((tmp_path / "step-s0-rounds.json").read_text())  # written every round
    assert so_far == [r for r in rows if r["arm"] == "step"]
    for arm in ("corrector", "step"):  # the learners' pairs and their real corrections, counted
        last = [r for r in rows if r["arm"] == arm][-1]
        assert (
            0 <= last["corrections"] <= 3 * last["pairs"] and last["pairs_right"] <= last["pairs"]
        )
        past = last["accuracy"]["past_N"]  # what the learners did past N: report only
        assert past["fixes"] + past["breaks"] <= past["problems"] > 0
    assert "past_N" not in rows[0]["accuracy"]  # the self arm has no learner
    assert all(0 <= r["right"] <= r["kept"] <= 24 for r in rows)
    corrector = next(r for r in rows if r["arm"] == "corrector")
    assert rows[0]["accuracy"]["smart"] == corrector["accuracy"]["smart"]
    for batch in labelled[:3]:  # 3 digits, the one length past N=2 (--ahead=1)
        assert all(p.count("+") == 1 and len(p.split("+")[0]) == 3 for p, _ in batch)
    assert set(rows[1]["agreement"]) == {"3"}
    text = (tmp_path / "results.md").read_text()
    assert "reach/N at the end" in text and "votes = attempt (%)" in text
    assert all(r["same"] is None for r in rows if r["arm"] == "self")
    assert all(0 <= r["same"] <= 1 for r in rows if r["arm"] == "corrector" and r["round"])
    # the self arm makes no stupid (nor learner); the corrector does
    assert events[:4] == ["tune"] * 3 + ["corrupt"]
    # re-checkable: every kept label written out, each smart's final weights readable by sample.py
    log = (tmp_path / "labels-self-s0.jsonl").read_text().splitlines()
    assert len(log) == rows[1]["kept"]
    r = run("sample.py", f"--ckpt={tmp_path}/s0-k0/self/ckpt.pt", "--digits=3", "--num=4")
    assert r.returncode == 0 and "/4 correct" in r.stdout, r.stderr[-2000:]


def test_a_round_step_pairs_each_attempt_before_with_the_label_agreed_after(monkeypatch):
    """The step arm's pairs: the problems the smarts did not agree on before a round (and as many
    they did), where the tuned smarts now agree; each pair keeps every smart's attempt before."""
    from experiments import reach

    ps = eval_set("add", 3, "reverse", 4)
    right = [p.completion for p in ps]
    tried = [
        (ps[0], None, ["1$", "2$", "3$"]),  # no label before the round
        (ps[1], None, ["4$", right[1], right[1]]),
        (ps[2], right[2], [right[2]] * 3),  # labelled before
        (ps[3], right[3], [right[3]] * 3),
    ]

    class Scripted(dict):  # a tuned smart: its completion of each prompt
        cfg = SimpleNamespace(abacus=False)

    after = [Scripted({p.prompt: p.completion for p in ps}) for _ in range(3)]
    after[0][ps[1].prompt] = "5$"  # still one dissent on problem 1: no pair from it
    monkeypatch.setattr(
        reach, "completions", lambda m, tok, problems: [m[p.prompt] for p in problems]
    )
    data, cfg = SimpleNamespace(task="add", fmt="reverse"), SimpleNamespace(agree=3)
    steps = reach.round_step(after, None, data, tried, cfg, random.Random(0))
    assert sorted(steps, key=lambda s: s[0].prompt) == sorted(
        [(ps[0], right[0], ["1$", "2$", "3$"]), tried[2], tried[3]],
        key=lambda s: s[0].prompt,
    )


def test_the_filter_arm_keeps_an_attempt_only_where_its_learner_keeps_it(monkeypatch):
    """The learner as a checker: its smart's attempt is a vote where the learner answers KEEP or
    writes the attempt again, and no vote where it rewrites it (even into a right one)."""
    from experiments import reach

    class Scripted:  # a smart (or a learner) that writes what `write` says
        cfg = SimpleNamespace(abacus=False)

        def __init__(self, write):
            self.write = write

    def keeps(p, attempt):  # keep every other problem, write the attempt again on a third
        n = int(p.prompt.split("+")[0])
        return "$" if n % 2 else attempt if n % 3 == 0 else p.completion

    smart = Scripted(lambda p: p.completion[:-2] + "9$")  # a wrong attempt, long enough
    checker = Scripted(keeps)
    monkeypatch.setattr(reach, "completions", lambda m, tok, ps: [m.write(p) for p in ps])
    monkeypatch.setattr(
        reach,
        "correct",
        lambda m, tok, ps, attempts: [
            {"completion": a if m.write(p, a) == "$" else m.write(p, a)}
            for p, a in zip(ps, attempts)
        ],
    )
    data, cfg = SimpleNamespace(task="add", fmt="reverse"), SimpleNamespace(problems=30, agree=1)
    problems, attempts, chosen, same = reach.label_length(
        [smart], [checker], None, data, 3, cfg, 0, check=True
    )
    n = [int(p.prompt.split("+")[0]) for p in problems]
    expected = [(i, attempts[0][i]) for i in range(30) if n[i] % 2 or n[i] % 3 == 0]
    assert chosen == expected and 0 < len(chosen) < 30
    assert same == len(expected) / 30
    _, _, corrected, _ = reach.label_length([smart], [checker], None, data, 3, cfg, 0)
    assert len(corrected) == 30  # the corrector arm votes its learner's rewrite instead


def test_no_decision_of_the_reach_loop_reads_the_truth_past_N(tmp_path, monkeypatch):
    """The loop run twice on the same smarts, the second time with every answer past N judged
    wrong wherever the report reads the truth: the same labels, schedule, stopping round and
    weights. Only the report's numbers change."""
    reach = tiny_reach(monkeypatch)
    args = [*TINY_REACH, "--arms=self,corrector,step,filter", "--rounds=3", "--ahead=3"]
    args += ["--threshold=0.2"]
    reach.main([f"--out_dir={tmp_path}/a", *args])
    for k, made in itertools.product(range(3), ("smart", "stupid", "learner")):
        shutil.copytree(tmp_path / "a" / f"s0-k{k}" / made, tmp_path / "b" / f"s0-k{k}" / made)
    judge = reach.judge

    def liar(problem, completion):  # past N, every answer is judged wrong
        verdict = judge(problem, completion)
        if problem.digits > 2:
            verdict.update(correct=False, verified=False)
        return verdict

    monkeypatch.setattr(reach, "judge", liar)
    reach.main([f"--out_dir={tmp_path}/b", *args])
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["rows"] for d in "ab")
    decided = ("arm", "round", "frontier", "agreement", "kept", "pairs", "corrections")
    assert [[r.get(k) for k in decided] for r in a] == [[r.get(k) for k in decided] for r in b]
    for arm, k in itertools.product(("self", "corrector", "step", "filter"), range(3)):
        labels = (tmp_path / d / f"labels-{arm}-s0.jsonl" for d in "ab")
        assert len({f.read_text() for f in labels}) == 1
        wa, wb = (torch.load(tmp_path / d / f"s0-k{k}" / arm / "ckpt.pt") for d in "ab")
        assert all(torch.equal(wa["model"][n], wb["model"][n]) for n in wa["model"])
    assert any(r["kept"] for r in a)  # the loop did label something past N
    assert all(r["right"] == 0 for r in b)  # and the liar was read by the report


def test_the_reach_loop_labels_and_measures_nothing_past_longest_and_stops_there(
    tmp_path, monkeypatch
):
    reach = tiny_reach(monkeypatch)
    args = [*TINY_REACH, "--arms=self", "--rounds=6", "--ahead=3", "--threshold=0.01"]
    reach.main([f"--out_dir={tmp_path}", *args, "--longest=3"])
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert all(set(r["agreement"]) <= {"3"} for r in rows)  # --ahead=3 would reach 5
    assert all(max(map(int, a)) == 3 for r in rows for a in r["accuracy"]["smart"])
    moved = [r["round"] for r in rows if r["frontier"] == 3]
    assert moved and rows[-1]["round"] == moved[0]  # the first round to reach --longest is the last


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
    import shutil

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


def test_reach_plot_draws_each_arm_and_seed_by_round_and_by_second():
    pytest.importorskip("matplotlib")
    from experiments.reach import plot

    def row(arm, seed, rnd, seconds, reach):
        return {"arm": arm, "seed": seed, "round": rnd, "seconds": seconds, "reach": reach}

    rows = [
        row("self", 0, 0, 10, [1.0, 1.5]),
        row("self", 0, 1, 50, [1.5, 2.0]),
        row("corrector", 0, 0, 20, [1.0, 1.0]),
        row("corrector", 0, 1, 120, [2.0, 2.0]),
    ]
    by_round, by_second = plot(rows, 8).axes
    assert [list(line.get_xdata()) for line in by_round.lines[:2]] == [[0, 1], [0, 1]]
    assert [list(line.get_xdata()) for line in by_second.lines[:2]] == [[10, 50], [20, 120]]
    assert list(by_second.lines[1].get_ydata()) == [1.0, 2.0]  # the mean over the K smarts
