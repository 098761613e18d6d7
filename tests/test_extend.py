"""extend.py, knowledge extended, on a tiny smart: fresh problems every round, every length measured
on its own problems, the truth past N read by no decision, and a stopped run resumed bit for bit."""

import dataclasses
import json
import shutil

import pytest
import torch
from conftest import tiny_smarts

import common
import extend
import report
from cli import BadInput, parse_config
from cot_data import eval_operands, fresh_problems

# one smart of two digits, and a schedule that moves the frontier every round up to 6 digits
RUN = ["--max_digits=2", "--smarts=1", "--longest=6", "--problems=32", "--ahead=2", "--steps=20"]
RUN += ["--threshold=0.1", "--device=cpu"]


@pytest.fixture(scope="module")
def first_smart(tmp_path_factory):
    """A tiny smart trained once, copied into every run's folder below (copies are reused)."""
    out = tmp_path_factory.mktemp("extend")
    with pytest.MonkeyPatch.context() as m:
        tiny_smarts(m)
        extend.make_smarts(parse_config(extend.ExtendConfig, "", [f"--out_dir={out}", *RUN]), "cpu")
    return out / "k0"


def run(out, first_smart, *args):
    if not (out / "k0").exists():
        shutil.copytree(first_smart, out / "k0")
    return extend.extend(parse_config(extend.ExtendConfig, "", [f"--out_dir={out}", *RUN, *args]))


def decisions(state):
    """Everything a run decided: its schedule, its labels, and its smarts' weights."""
    rows = [(r["round"], r["frontier"], r["agreement"], r["kept"]) for r in state["rows"]]
    return rows, state["labels"], state["smarts"]


def same_weights(a, b):
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_fresh_problems_are_new_every_time_and_never_evaluated():
    seen = set()
    first = fresh_problems("add", "reverse", 3, 100, "0:1", seen)
    again = fresh_problems("add", "reverse", 3, 100, "0:1", seen)  # the same seed, later
    ops = [tuple(p.operands) for p in first + again]
    assert len(first) == len(again) == 100 and len(set(ops)) == 200
    assert not set(ops) & {tuple(o) for o in eval_operands("add", 3, 200)}
    assert all(p.digits == 3 for p in first + again) and set(ops) == seen


def test_smarts_are_trained_on_every_digit_index_they_label():
    """A smart sees in training, shifted, every digit index up to --longest: an index it never saw
    is where labelling stalls."""
    cfg = parse_config(extend.ExtendConfig, "", ["--longest=60"])
    tcfg = parse_config(extend.train.TrainConfig, "", extend.smart_args(cfg, 0))
    assert tcfg.longest == 60 and tcfg.abacus_offset >= 60
    cfg = parse_config(extend.ExtendConfig, "", ["--longest=60", "--abacus_offset=20"])
    assert parse_config(extend.train.TrainConfig, "", extend.smart_args(cfg, 0)).abacus_offset == 20


def test_each_length_is_measured_on_its_own_problems(monkeypatch):
    """A length holds only its own problems, at every length (the first has 20, fewer than the
    screen): reach is the last length before the first below 90%."""
    calls = []

    def right_up_to_4(model, tok, problems):
        calls.append({p.digits for p in problems})
        return [p.digits <= 4 or i % 3 == 0 for i, p in enumerate(problems)]

    monkeypatch.setattr(report, "every_step_right", right_up_to_4)
    data = dataclasses.make_dataclass("Data", ["task", "fmt"])("add", "reverse")
    reach, acc = report.measure(None, None, data, 10)
    assert all(len(lengths) == 1 for lengths in calls)
    assert reach == 4 and list(acc) == [1, 2, 3, 4, 5] and acc[5] < 0.9
    assert calls.count({5}) == 2  # 5 is close: all of its problems, in two parts


def test_the_truth_past_n_decides_nothing(tmp_path, first_smart, tiny_extend, monkeypatch):
    """The same labels, schedule, stop and weights with the truth replaced wherever it can be read
    past N: the problems' reference completions and answers, and the report's reference."""
    honest = run(tmp_path / "honest", first_smart)
    moves = [b["frontier"] > a["frontier"] for a, b in zip(honest["rows"], honest["rows"][1:])]
    assert sum(moves) >= 2 and honest["rows"][-1]["frontier"] == 6  # stopped by its own rule
    lies = []

    def liar(problem):
        lies.append(problem)
        return "#0$"

    def lying_problems(*args):
        problems = fresh_problems(*args)
        return [dataclasses.replace(p, completion="#0$", answer="0") for p in problems]

    monkeypatch.setattr(report, "reference", liar)
    monkeypatch.setattr(extend, "fresh_problems", lying_problems)
    lied = run(tmp_path / "lied", first_smart)
    assert lies and decisions(lied)[:2] == decisions(honest)[:2]
    assert same_weights(decisions(lied)[2], decisions(honest)[2])


def test_a_stopped_run_resumes_as_if_never_stopped(tmp_path, first_smart, tiny_extend):
    whole = run(tmp_path / "whole", first_smart, "--rounds=3")
    run(tmp_path / "pieces", first_smart, "--rounds=1")
    pieces = run(tmp_path / "pieces", first_smart, "--rounds=3", "--resume")
    assert len(whole["rows"]) == len(pieces["rows"]) > 2
    assert decisions(pieces)[:2] == decisions(whole)[:2]
    assert same_weights(decisions(pieces)[2], decisions(whole)[2])
    assert (tmp_path / "pieces" / "k0" / "extended" / "ckpt.pt").exists()
    assert (tmp_path / "pieces" / "labels.jsonl").read_text().count("\n") == len(pieces["labels"])


def test_voters_count_the_labels_each_rule_keeps(tmp_path, first_smart):
    """experiments/voters.py on three copies of one smart: every rule keeps the same labels, a
    stricter P keeps fewer, and each smart's wrong completions are each counted at one place."""
    from experiments import voters

    for k in range(3):
        shutil.copytree(first_smart, tmp_path / "run" / f"k{k}")
    args = [f"--run={tmp_path / 'run'}", "--weights=smart", "--lengths=1-3", "--problems=16"]
    voters.main([*args, "--confidence=0.5,0.999", f"--out_dir={tmp_path / 'v'}", "--device=cpu"])
    found = json.loads((tmp_path / "v" / "results.json").read_text())
    kept = found["kept"]
    assert list(kept) == ["all K", "k0+k1", "k0+k2", "k1+k2", "k0", "k1", "k2"]
    assert all(by == kept["all K"] for by in kept.values())
    counts = [kept["k0"][p] for p in ("0.0", "0.5", "0.999")]
    assert counts[0][0] == 3 * 16 and counts[0][0] >= counts[1][0] >= counts[2][0]
    assert 0 < counts[0][1] < counts[0][0]  # some right at 1 digit, some wrong at 3
    assert all(sum(wall.values()) == counts[0][1] for wall in found["walls"])


def test_a_screen_of_a_round_changes_only_what_it_says(tmp_path, first_smart, tiny_extend):
    """experiments/rounds.py: a copy of a run going on with nothing changed makes the run's own
    rounds bit for bit; with a smaller batch it tunes as many examples in more steps; the patches
    are undone after it."""
    from experiments import rounds

    whole = run(tmp_path / "whole", first_smart, "--rounds=2")
    run(tmp_path / "r1", first_smart, "--rounds=1")
    same = rounds.main([f"--run={tmp_path / 'r1'}", "--rounds=1", f"--out_dir={tmp_path / 'same'}"])
    assert decisions(same)[:2] == decisions(whole)[:2]
    assert same_weights(decisions(same)[2], decisions(whole)[2])
    args = [f"--run={tmp_path / 'r1'}", "--rounds=1", "--batch_size=16", "--keep_optimizer"]
    small = rounds.main([*args, f"--out_dir={tmp_path / 'small'}"])
    assert small["config"]["steps"] == 4 * whole["config"]["steps"] and len(small["rows"]) == 3
    split = json.loads((tmp_path / "small" / "split.json").read_text())
    assert split["tune"] > 0 and split["label"] > 0 and split["report"] > 0
    assert extend.BATCH_SIZE == 64 and extend.tune.__module__ == "extend"
    assert common.Optim.optimizer.__qualname__ == "Optim.optimizer"
    with pytest.raises(BadInput, match="is there"):
        rounds.main([f"--run={tmp_path / 'r1'}", f"--out_dir={tmp_path / 'small'}"])
    with pytest.raises(BadInput, match="no state.pt"):
        rounds.main([f"--run={tmp_path / 'none'}", f"--out_dir={tmp_path / 'x'}"])
    (tmp_path / "r1" / "state.pt").write_bytes(b"not a run")
    with pytest.raises(BadInput, match="not a readable"):
        rounds.main([f"--run={tmp_path / 'r1'}", f"--out_dir={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()
