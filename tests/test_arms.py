"""The arms study's learners (experiments/learners.py): editing learners, adapters and frozen
weights, on-policy rounds, a stupid whose mistakes are length mistakes; the probe; and one arm end
to end."""

import json
import random
import shutil
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from conftest import run
from test_stages import AlwaysKeep

from common import Optim, load_checkpoint, tokenizer_from
from cot_data import (
    KEEP,
    CharTokenizer,
    check_chain,
    eval_set,
    make_problem,
    record_of,
)
from experiments import learners
from experiments.learners import FROZEN, Arm, finetune_arm, improve_arm, short_stupid
from experiments.study import TARGETS, correct_as, overwrite, written

FAST = dict(problems=48, steps=6, attempt_temperature=3.0)  # improve.py options, tiny


@pytest.fixture(scope="module")
def tiny(smart_dir):
    model, _, data = load_checkpoint(f"{smart_dir}/smart/ckpt.pt")
    examples = [(p.prompt, p.completion) for p in eval_set("add", 2, "reverse", 10)]
    return model, tokenizer_from(data), examples, Optim(steps=4, lr=1e-2, batch_size=4, warmup=1)


def changed(a, b):
    return {k for k, v in a.state_dict().items() if not torch.equal(v, b.state_dict()[k])}


def test_an_adapter_changes_each_matrix_of_a_frozen_model_by_a_low_rank_term(tiny):
    model, tok, examples, optim = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = finetune_arm(
        model, examples, optim, tok, "cpu", "adapter", seed=1, freeze="all", adapter=2
    )
    assert set(adapted.state_dict()) == set(before)  # merged: a plain model again
    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # the model given is untouched
    moved = changed(adapted, model)
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert moved and moved <= linear  # norms and tables stay frozen
    for k in moved:
        assert torch.linalg.matrix_rank(adapted.state_dict()[k] - before[k], atol=1e-6) <= 2
    assert all(p.requires_grad for p in adapted.parameters())


def test_frozen_embeddings_stay_as_they_were(tiny):
    model, tok, examples, optim = tiny
    tuned = finetune_arm(model, examples, optim, tok, "cpu", "frozen", seed=1, freeze="embeddings")
    moved = changed(tuned, model)
    assert moved and not any(k.startswith(("tok_embeddings", "digit_embeddings")) for k in moved)
    assert changed(finetune_arm(model, examples, optim, tok, "cpu", "all", seed=1), model) >= {
        "tok_embeddings.weight"
    }


class WritesAnswer(AlwaysKeep):
    """A learner that always writes the answer '#64$' and nothing else."""

    def forward(self, idx, targets=None, positions=None, mask=None, cache=None, digit_index=None):
        tok = CharTokenizer()
        if cache is not None:
            cache.advance(idx.shape[1])
        written = (cache.pos - self.prompt_len) if cache is not None else 0
        nxt = tok.encode("#64$")[min(max(written, 0), 3)]
        return torch.nn.functional.one_hot(
            torch.full_like(idx, nxt), self.cfg.vocab_size
        ).float(), None


def test_an_answer_only_learner_keeps_the_attempts_chain_of_thought():
    p = make_problem("add", [12, 34], "reverse")  # 21+43=00;#64$
    learner = WritesAnswer()
    learner.prompt_len = len("21+43=11;#99>")
    recs = correct_as(learner, CharTokenizer(), [p], ["11;#99$"], target="answer")
    assert recs[0]["completion"] == "11;#64$" and recs[0]["correct"] and not recs[0].get("kept")
    # the same learner taken as writing whole solutions: '#64$' alone has no chain of thought
    assert correct_as(learner, CharTokenizer(), [p], ["11;#99$"])[0]["completion"] == "#64$"
    assert written("000;#640$", "answer") == written("000;#640$", "digits") == "#640$"


def test_a_digits_learner_edits_the_attempts_answer_in_place():
    assert (
        overwrite("#12345$", "#1294567777$") == "#12945$"
        and overwrite("#12345$", "#99$") == "#99345$"
    )
    p = make_problem("add", [12, 34], "reverse")  # 21+43=000;#640$
    learner = WritesAnswer()  # writes '#64$' over the attempt's '#990$'
    learner.prompt_len = len("21+43=000;#990>")
    recs = correct_as(learner, CharTokenizer(), [p], ["000;#990$"], target="digits")
    assert recs[0]["completion"] == "000;#640$" and recs[0]["correct"]


def test_an_onpolicy_round_trains_on_verified_corrections_only(monkeypatch):
    p = make_problem("add", [12, 34], "reverse")  # 21+43=000;#640$
    right, wrong, broken = (
        p.completion,
        "000;#650$",
        "001;#640$",
    )  # broken: the right answer, a wrong step
    # a "model" here is the completion it writes; smart's sample is right, stupid's is wrong
    monkeypatch.setattr(
        learners,
        "score",
        lambda model, tok, problems, **kw: [record_of(q, model) for q in problems],
    )

    def correct(learner, tok, problems, attempts, target, **kw):
        if "temperature" not in kw:  # the learner's greedy fix of stupid's attempt: wrong again
            return [record_of(q, wrong) for q in problems]
        # sampled: a right attempt is kept; a wrong one is made right, left wrong, or right with a
        # wrong step
        outs = {
            right: [dict(record_of(p, right), kept=True)],
            wrong: [record_of(p, right), record_of(p, wrong), record_of(p, broken)],
        }
        seen, recs = {}, []
        for a in attempts:
            recs.append(outs[a][seen.get(a, 0) % len(outs[a])])
            seen[a] = seen.get(a, 0) + 1
        return recs

    monkeypatch.setattr(learners, "correct_as", correct)
    monkeypatch.setattr(learners, "ROUND_SAMPLES", 3)
    monkeypatch.setattr(learners, "FIX_WEIGHT", 2)
    learner = SimpleNamespace(cfg=SimpleNamespace(max_digit_index=64))
    cfg = SimpleNamespace(attempt_temperature=0.8)
    examples, line = learners.onpolicy_round(
        learner, right, wrong, None, [p], cfg, "solution", seed=0
    )
    # 3 attempts (smart's right, stupid's wrong, the learner's own wrong), 3 samples each
    fix = ("21+43=000;#650>", right)
    assert examples.count(("21+43=000;#640>", KEEP)) == 3  # the right attempt, kept 3 times
    assert (
        examples.count(fix) == 2 * 2 and len(examples) == 3 + 4
    )  # one fix per wrong attempt, weight 2
    assert all(check_chain("add", "reverse", [12, 34], out) for _, out in examples if out != KEEP)
    assert line.startswith("2/3 attempts wrong; 2/6 sampled corrections of them right, 3/3")


def test_onpolicy_rounds_write_each_rounds_learner(pipeline, tmp_path, monkeypatch):
    for stage in ("smart", "stupid"):
        shutil.copytree(pipeline / stage, tmp_path / stage)
    for name, value in (("ROUND_PROBLEMS", 6), ("ROUND_SAMPLES", 2), ("ROUND_STEPS", 2)):
        monkeypatch.setattr(learners, name, value)
    log = improve_arm(str(tmp_path), Arm(target="digits", rounds=2), seed=3, **FAST)
    assert "round 1: " in log and "round 2: " in log
    for name, step in (
        ("learner_round0", 6),
        ("learner_round1", 8),
        ("learner", 10),
        ("expert_iteration", 10),
    ):
        ckpt = torch.load(tmp_path / name / "ckpt.pt", weights_only=False)
        assert ckpt["step"] == step
        assert ckpt["stage"] == ("expert_iteration" if name == "expert_iteration" else "learner")
    assert (
        torch.load(tmp_path / "learner_round1" / "ckpt.pt", weights_only=False)["target"]
        == "digits"
    )


def test_a_short_stupid_is_a_new_model_trained_on_the_shorter_lengths(
    smart_dir, tmp_path, monkeypatch
):
    shutil.copytree(smart_dir / "smart", tmp_path / "smart")
    drawn, stream = [], learners.ProblemStream

    def spy(task, fmt, lo, hi, seed=0):
        drawn.append((lo, hi))
        return stream(task, fmt, lo, hi, seed)

    monkeypatch.setattr(learners, "ProblemStream", spy)
    assert "on 1..1 digits" in short_stupid(str(tmp_path), short_by=1)
    smart = torch.load(tmp_path / "smart" / "ckpt.pt", weights_only=False)
    stupid = torch.load(tmp_path / "stupid" / "ckpt.pt", weights_only=False)
    assert (
        drawn == [(1, 1)] and stupid["step"] == smart["train_cfg"]["steps"]
    )  # 1..N-1 digits, smart's budget
    assert (
        stupid["stage"] == "stupid"
        and stupid["run"] == smart["run"]
        and stupid["model_cfg"] == smart["model_cfg"]
    )
    assert not all(torch.equal(smart["model"][k], v) for k, v in stupid["model"].items())


def test_every_arm_is_a_valid_set_of_options():
    from experiments.arms import ARMS

    for name, arm in ARMS.items():
        assert (
            arm.target in TARGETS
            and arm.freeze in FROZEN
            and arm.learner_from in ("stupid", "smart")
        ), name
        assert (
            (arm.freeze != "all" or arm.adapter)
            and arm.lr > 0
            and 0 <= arm.near_miss < 1
            and 0 <= arm.replay < 1
        )


def test_a_slip_changes_one_answer_digit_into_its_neighbour():
    from experiments.probe import slipped

    rng = random.Random(0)
    for a, b in [(12345678, 87654321), (999, 1), (5, 5), (0, 0), (11, 0)]:
        p = make_problem("add", [a, b], "reverse")
        s = slipped(p.completion, rng)
        head, ans = p.completion.split("#")
        s_head, s_ans = s.split("#")
        assert s_head == head and len(s_ans) == len(ans) and s_ans.endswith("$")
        diff = [i for i, (x, y) in enumerate(zip(ans, s_ans)) if x != y]
        assert len(diff) == 1
        i = diff[0]
        assert s_ans[i] == ans[i + 1] or len(set(ans[:-1])) == 1


def test_the_probe_hands_the_learner_each_kind_of_attempt(pipeline, tmp_path):
    r = run(
        "-m",
        "experiments.probe",
        f"--runs={pipeline}",
        f"--out_dir={tmp_path}",
        "--eval_size=4",
        "--extra=1",
        "--plot=0",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    acc = json.loads((tmp_path / "results.json").read_text())["runs"][str(pipeline)]["accuracy"]
    kinds = ("right", "slip", "smart")
    assert list(acc) == ["smart alone"] + [
        f"learner{w}o {k}{s}"
        for k in kinds
        for w, s in ((" (solution) ", ""), (" ", ": attempt left as it was"))
    ]
    assert all(
        list(a) == ["1", "2", "3"] and all(0 <= x <= 1 for x in a.values()) for a in acc.values()
    )


def test_an_arm_runs_end_to_end_and_is_evaluated_as_it_writes(pipeline, tmp_path, monkeypatch):
    """arms.py on one digits arm: its learner and controls, evaluate.py applying it as a digits
    learner (its answers written over smart's, so every answer has smart's length), and the
    probe."""
    from experiments import arms

    monkeypatch.setattr(arms, "improve_arm", partial(improve_arm, **FAST))
    cfg = arms.ArmsConfig(from_dir=str(pipeline), out_dir=str(tmp_path), extra=1, eval_size=4)
    r = arms.arm_run(cfg, "digits", 3)
    smart, fixed = r["models"]["smart"]["records"], r["models"]["learner_on_smart"]["records"]
    whole = [
        (s, x)
        for s, x in zip(smart, fixed)
        if "#" in s["completion"] and s["completion"].endswith("$")
    ]
    assert whole and all(len(x["completion"]) == len(s["completion"]) for s, x in whole)
    assert set(r["probe"]) == {"learner o right", "learner o slip", "learner o smart"}
    assert (
        "learner_on_smart" in r["verdict"]["fixed"]
        and (tmp_path / "digits-s3" / "log.txt").exists()
    )
