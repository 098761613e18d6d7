"""Noisy training traces (cot_data's injectors, experiments/noise.py's specs), the study."""

import json
import random

import pytest
from conftest import run

from cot_data import (
    TASKS,
    answer_of,
    chain_of,
    check,
    dynamic_noise,
    formats_of,
    make_problem,
    random_operands,
    static_noise,
)
from experiments.noise import drop_lines, noise_from_spec


def problems(n=50, fmt="plain"):
    rng = random.Random(0)
    return [make_problem("add", random_operands("add", 6, rng), fmt, 6) for _ in range(n)]


def test_noise_specs_do_what_they_say():
    assert noise_from_spec("none") is None
    ps = problems()
    noisy = noise_from_spec("static:0.5")
    static = [noisy(p) for p in ps]
    assert all(
        check(q.task, q.fmt, q.operands, q.completion)[1] for q in static
    )  # the answer is kept
    assert sum(q.completion != p.completion for p, q in zip(ps, static)) > 40
    lines = [noise_from_spec("lines:1.0")(p) for p in ps]
    assert all(
        q.completion.startswith("#") and check(q.task, q.fmt, q.operands, q.completion)[1]
        for q in lines
    )
    dynamic = [noise_from_spec("dynamic:1.0")(p) for p in ps]
    assert not any(check(q.task, q.fmt, q.operands, q.completion)[1] for q in dynamic)
    noisy = noise_from_spec("dynamic:0.3", random.Random(1))
    some = [noisy(p) for p in problems(400)]
    assert (
        0.2 < sum(not check(q.task, q.fmt, q.operands, q.completion)[1] for q in some) / 400 < 0.4
    )


@pytest.mark.parametrize("spec", ["loud", "static", "static:2", "dynamic:x", "lines:-0.1"])
def test_bad_noise_spec(spec):
    with pytest.raises(ValueError, match="bad noise"):
        noise_from_spec(spec)


def test_drop_lines_keeps_the_answer_and_drops_lines():
    rng = random.Random(3)
    p = make_problem("add", [98765432, 12345678], "plain")
    lines = p.completion.count(";")
    dropped = [drop_lines(p, 0.5, rng) for _ in range(50)]
    assert all(check("add", "plain", p.operands, q.completion)[1] for q in dropped)
    assert 0.3 * lines < sum(q.completion.count(";") for q in dropped) / 50 < 0.7 * lines


def test_noise_study_runs_end_to_end(tmp_path):
    r = run(
        "-m",
        "experiments.noise",
        f"--out_dir={tmp_path}",
        "--steps=3",
        "--max_digits=1",
        "--eval_size=4",
        "--dim=16",
        "--n_layers=1",
        "--ffn_hidden=32",
        "--plot=0",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.load(open(tmp_path / "results.json"))["results"]
    assert {"clean", "static 90%", "lines 50%", "dynamic 10%", "mul answer only"} <= set(d)
    assert d["dynamic 50%"]["noise"] == "dynamic:0.5" and set(d["clean"]["accuracy"]) == {"1"}
    assert "| clean (add, reverse) |" in (tmp_path / "results.md").read_text()


TASK_FORMATS = [(t, f) for t in TASKS for f in formats_of(t) if f != "answer"]


@pytest.mark.parametrize("task,fmt", TASK_FORMATS)
def test_each_injector_changes_what_it_claims_on_every_task(task, fmt):
    """dynamic: a wrong answer, reached through a changed chain of thought (in column formats the
    fault is never on the last column, where only the answer would show it); static: changed chain
    digits, the answer kept; lines: the lines gone, the answer kept."""
    rng = random.Random(3)
    ps = [
        make_problem(task, random_operands(task, n, rng), fmt, n)
        for n in range(2, 7)
        for _ in range(60)
    ]
    dynamic = [dynamic_noise(p, rng) for p in ps]
    changed = [(p, q) for p, q in zip(ps, dynamic) if q is not p]
    assert len(changed) >= 0.99 * len(ps)
    for p, q in changed:
        assert not check(task, fmt, q.operands, q.completion)[1]
        assert chain_of(q.completion) != chain_of(p.completion)
    for p in ps[::10]:
        q = static_noise(
            p, 1.0, rng
        )  # at rate 1 every digit of the chain changes, and nothing else
        assert check(task, fmt, q.operands, q.completion)[1] and answer_of(
            q.completion
        ) == answer_of(p.completion)
        assert all(
            (a != b) == a.isdigit() for a, b in zip(chain_of(p.completion), chain_of(q.completion))
        )
        d = drop_lines(p, 1.0, rng)
        assert (
            d.completion == answer_of(p.completion)
            and check(task, fmt, d.operands, d.completion)[1]
        )


def test_dynamic_noise_leaves_alone_only_what_cannot_go_wrong(monkeypatch):
    """A task where no step can go wrong (here: one whose every fault still gives the right answer)
    comes back as it was, after a few tries per step."""
    from cot_data import TASKS, Task

    t = TASKS["add"]
    always_right = Task(
        t.operands,
        t.prompt,
        lambda ops, fmt, fault=None, rng=None: t.solve(ops, fmt),
        t.truth,
        t.n_problems,
        t.max_digits,
        t.steps,
    )
    monkeypatch.setitem(TASKS, "stubborn", always_right)
    p = make_problem("stubborn", [12, 34], "reverse")
    assert dynamic_noise(p, random.Random(0)) is p
    p = make_problem("add", [12, 34], "reverse")
    assert all(
        not check("add", "reverse", p.operands, dynamic_noise(p, random.Random(s)).completion)[1]
        for s in range(20)
    )
