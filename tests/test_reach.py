"""experiments/reach.py, the learner in stage 5's loop, on tiny smarts and learners: each arm runs
on extend.py's functions and smarts, a vote passes through the learner as its arm says, and the
truth past N decides nothing."""

import dataclasses
import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from conftest import run, tiny_smarts

import extend
import report
from cli import parse_config
from cot_data import KEEP, eval_set, fresh_problems
from experiments import reach

RUN = ["--max_digits=2", "--smarts=1", "--longest=6", "--problems=24", "--ahead=2", "--steps=4"]
RUN += ["--threshold=0.1", "--rounds=3", "--device=cpu"]


IMPROVE = reach.improve.ImproveConfig


def tiny_improve(**kw):
    """improve.py's recipe, tiny: few problems, few steps, attempts hot enough to be wrong."""
    return IMPROVE(problems=96, steps=300, lr=3e-3, attempt_temperature=3.0, **kw)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny smart, its stupid and its learner, made once and copied into every test's run (one
    smart: its learner's vote alone makes a label, so that the frontier moves)."""
    out = tmp_path_factory.mktemp("reach")
    with pytest.MonkeyPatch.context() as m:
        tiny_smarts(m)
        m.setattr(reach.improve, "ImproveConfig", tiny_improve)
        cfg = parse_config(reach.ReachConfig, "", [f"--out_dir={out}", *RUN])
        smarts, runs, data = extend.make_smarts(cfg, "cpu")
        for k, smart in enumerate(smarts):
            reach.make_learner(cfg, k, smart, runs[k], data, "cpu")
    return out


def arm(out, made, name, *args):
    if not (out / "k0").exists():
        shutil.copytree(made / "k0", out / "k0")
    cfg = parse_config(reach.ReachConfig, "", [f"--out_dir={out}", *RUN, f"--arm={name}", *args])
    return reach.run_arm(cfg)


def test_each_arm_runs_on_the_smarts_extend_py_runs_on(tmp_path, made, tiny_extend, monkeypatch):
    """The learners are made once; the control, extend.py on the same folder, trains no smart of its
    own; a corrector pairs every kept label with each smart's attempt, a step pairs from round 2
    on, a filter is never taught; every kept label and the final weights are written out."""
    rows = {name: arm(tmp_path, made, name) for name in reach.ARMS}
    monkeypatch.setattr(extend.train, "train", lambda cfg: pytest.fail("a smart trained again"))
    args = [f"--out_dir={tmp_path}", *RUN, "--rounds=1"]
    control = extend.extend(parse_config(extend.ExtendConfig, "", args))
    assert [r["reach"] for r in control["rows"][:1]] == [rows["corrector"][0]["reach"]]
    corrector = rows["corrector"]
    assert all(r["pairs"] == r["kept"] for r in corrector) and corrector[1]["kept"]
    assert rows["step"][1]["pairs"] == 0 and any(r["pairs"] for r in rows["step"][2:])
    assert all(r["pairs"] == 0 for r in rows["filter"])
    for name, mine in rows.items():
        out = tmp_path / name
        for r in mine:  # what a learner makes of smart's output just past the frontier: counted
            assert list(r["effect"]) == list(
                range(r["frontier"] + 1, min(r["frontier"] + 4, 6) + 1)
            )
            assert all(0 <= a <= 50 and 0 <= b <= 50 for a, b in r["effect"].values())
        labels = (out / "labels.jsonl").read_text().splitlines()
        assert len(labels) == sum(r["kept"] for r in mine)
        assert json.loads((out / "results.json").read_text())["rows"] == json.loads(
            json.dumps(mine)
        )
    r = run("sample.py", f"--ckpt={tmp_path}/step/k0/smart/ckpt.pt", "--digits=3", "--num=4")
    assert r.returncode == 0 and "/4 correct" in r.stdout, r.stderr[-2000:]


def test_a_vote_passes_through_the_learner_as_its_arm_says(monkeypatch):
    """corrector: the learner's rewrite, or the attempt where it answers KEEP; filter: the attempt
    where the learner keeps it or writes it again, else no vote; a pair is the attempt -> the label,
    KEEP where they are the same."""
    problems = eval_set("add", 3, "reverse", 6)
    prompts = [p.prompt for p in problems]
    wrong = {p.prompt: p.completion[:-2] + "9$" for p in problems}
    right = {p.prompt: p.completion for p in problems}

    def learner_writes(i, attempt):  # keep, rewrite to the right one, write the attempt again
        return [KEEP, right[prompts[i]], attempt][i % 3]

    def complete(model, tok, texts, room):
        if model == "smart":
            return [wrong[t] for t in texts]
        handed = [prompts[i] + wrong[prompts[i]][:-1] + ">" for i in range(len(prompts))]
        assert texts == handed  # the problem, the attempt without its '$', then '>'
        return [learner_writes(i, wrong[prompts[i]]) for i in range(len(texts))]

    monkeypatch.setattr(reach, "complete", complete)
    learner = SimpleNamespace(cfg=SimpleNamespace(max_digit_index=64, block_size=512))
    attempts = {}
    votes = reach.voter("corrector", "smart", learner, None, attempts)(prompts, 40)
    assert votes == [[wrong, right, wrong][i % 3][p] for i, p in enumerate(prompts)]
    assert attempts == wrong
    votes = reach.voter("filter", "smart", learner, None, {})(prompts, 40)
    assert votes == [wrong[p] if i % 3 != 1 else "" for i, p in enumerate(prompts)]
    kept = [(problems[0], wrong[prompts[0]]), (problems[1], right[prompts[1]])]
    pairs = reach.taught("corrector", learner, kept, attempts)
    assert [target for _, target in pairs] == [KEEP, right[prompts[1]]]
    assert pairs[1][0] == prompts[1] + wrong[prompts[1]][:-1] + ">"
    assert reach.taught("filter", learner, kept, attempts) == []


def test_the_truth_past_n_decides_nothing_in_any_arm(tmp_path, made, tiny_extend, monkeypatch):
    """Each arm run twice from the same smarts and learners, the second time with the truth replaced
    wherever it can be read past N (the labelled problems' references and answers, the report's
    reference): the same schedule, labels, pairs, and weights of every smart and learner."""
    honest = {name: arm(tmp_path / "honest", made, name) for name in reach.ARMS}
    assert any(r["kept"] for rows in honest.values() for r in rows)
    lies = []

    def liar(problem):
        lies.append(problem)
        return "#0$"

    def lying_problems(*args):
        return [dataclasses.replace(p, completion="#0$", answer="0") for p in fresh_problems(*args)]

    monkeypatch.setattr(report, "reference", liar)
    monkeypatch.setattr(extend, "fresh_problems", lying_problems)
    lied = {name: arm(tmp_path / "lied", made, name) for name in reach.ARMS}
    assert lies
    decided = ("round", "frontier", "agreement", "kept", "pairs", "corrections")
    for name in reach.ARMS:
        assert [[r[k] for k in decided] for r in honest[name]] == [
            [r[k] for k in decided] for r in lied[name]
        ]
        texts = {(tmp_path / d / name / "labels.jsonl").read_text() for d in ("honest", "lied")}
        assert len(texts) == 1
        for model in ("smart", "learner"):
            a, b = (
                torch.load(tmp_path / d / name / "k0" / model / "ckpt.pt")["model"]
                for d in ("honest", "lied")
            )
            assert all(torch.equal(a[n], b[n]) for n in a)
