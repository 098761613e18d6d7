"""The learner arms of issue 11 that change how it is trained: adapters and frozen weights,
on-policy rounds, a stupid whose mistakes are length mistakes; and the probe of its skill past N."""
import json
import random
import shutil
from dataclasses import fields
from types import SimpleNamespace

import pytest
import torch

from common import Optim, finetune, judged, load_checkpoint, parse_config, tokenizer_from
from conftest import FAST_IMPROVE, run
from cot_data import KEEP, check_chain, eval_set, make_problem


@pytest.fixture(scope="module")
def tiny(smart_dir):
    model, _, data = load_checkpoint(f"{smart_dir}/smart/ckpt.pt")
    examples = [(p.prompt, p.completion) for p in eval_set("add", 2, "reverse", 10)]
    return model, tokenizer_from(data), examples, Optim(steps=4, batch_size=4, warmup=1, lr=1e-2)


def changed(a, b):
    return {k for k, v in a.state_dict().items() if not torch.equal(v, b.state_dict()[k])}


def test_an_adapter_changes_each_matrix_of_a_frozen_model_by_a_low_rank_term(tiny):
    model, tok, examples, cfg = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = finetune(model, examples, cfg, tok, "cpu", "adapter", seed=1, freeze="all", adapter=2)
    assert set(adapted.state_dict()) == set(before)                            # merged: a plain model again
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the model given is untouched
    moved = changed(adapted, model)
    linear = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert moved and moved <= linear                                           # norms and tables stay frozen
    for k in moved:
        assert torch.linalg.matrix_rank(adapted.state_dict()[k] - before[k], atol=1e-6) <= 2
    assert all(p.requires_grad for p in adapted.parameters())


def test_frozen_embeddings_stay_as_they_were(tiny):
    model, tok, examples, cfg = tiny
    tuned = finetune(model, examples, cfg, tok, "cpu", "frozen", seed=1, freeze="embeddings")
    moved = changed(tuned, model)
    assert moved and not any(k.startswith(("tok_embeddings", "digit_embeddings")) for k in moved)
    assert changed(finetune(model, examples, cfg, tok, "cpu", "all", seed=1), model) >= {"tok_embeddings.weight"}


def test_an_onpolicy_round_trains_on_verified_corrections_only(monkeypatch):
    import improve
    p = make_problem("add", [12, 34], "reverse")                     # 21+43=000;#640$
    right, wrong, broken = p.completion, "000;#650$", "001;#640$"     # broken: the right answer, a wrong step
    # a "model" here is the completion it writes; smart's sample is right, stupid's is wrong
    monkeypatch.setattr(improve, "score", lambda model, tok, problems, **kw: [judged(q, model) for q in problems])

    def correct(learner, tok, problems, attempts, target, **kw):
        if "temperature" not in kw:          # the learner's greedy fix of stupid's attempt: wrong again
            return [judged(q, wrong) for q in problems]
        # sampled: a right attempt is kept; a wrong one is made right, left wrong, or right with a wrong step
        outs = {right: [dict(judged(p, right), kept=True)],
                wrong: [judged(p, right), judged(p, wrong), judged(p, broken)]}
        seen = {}
        recs = []
        for a in attempts:
            recs.append(outs[a][seen.get(a, 0) % len(outs[a])])
            seen[a] = seen.get(a, 0) + 1
        return recs
    monkeypatch.setattr(improve, "correct", correct)
    cfg = improve.ImproveConfig(round_samples=3, fix_weight=2)
    learner = SimpleNamespace(cfg=SimpleNamespace(max_digit_index=64))
    examples, line = improve.onpolicy_round(learner, right, wrong, None, [p], cfg, seed=0)
    # 3 attempts (smart's right, stupid's wrong, the learner's own wrong), 3 samples each
    fix = ("21+43=000;#650>", right)
    assert examples.count(("21+43=000;#640>", KEEP)) == 3                    # the right attempt, kept 3 times
    assert examples.count(fix) == 2 * 2 and len(examples) == 3 + 4          # one fix per wrong attempt, weight 2
    assert all(check_chain("add", "reverse", [12, 34], out) for _, out in examples if out != KEEP)
    assert line.startswith("2/3 attempts wrong; 2/6 sampled corrections of them right, 3/3")


def test_onpolicy_rounds_write_each_rounds_learner(pipeline, tmp_path):
    for stage in ("smart", "stupid"):
        shutil.copytree(pipeline / stage, tmp_path / stage)
    r = run("improve.py", f"--out_dir={tmp_path}", *FAST_IMPROVE, "--rounds=2", "--round_problems=6",
            "--round_samples=2", "--round_steps=2", "--target=digits")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "round 1: " in r.stdout and "round 2: " in r.stdout
    for name, step in (("learner_round0", 6), ("learner_round1", 8), ("learner", 10), ("expert_iteration", 10)):
        ckpt = torch.load(tmp_path / name / "ckpt.pt", weights_only=False)
        assert ckpt["step"] == step
        assert ckpt["stage"] == ("expert_iteration" if name == "expert_iteration" else "learner")
    assert torch.load(tmp_path / "learner_round1" / "ckpt.pt", weights_only=False)["target"] == "digits"
    r = run("improve.py", f"--out_dir={tmp_path}", *FAST_IMPROVE, "--rounds=1", "--round_problems=6",
            "--round_samples=2", "--round_steps=2", "--controls=0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "learner_round0" / "ckpt.pt").exists()
    assert not (tmp_path / "learner_round1" / "ckpt.pt").exists()     # an earlier learner's round is gone


def test_a_short_stupid_is_a_new_model_trained_on_the_shorter_lengths(smart_dir, tmp_path, monkeypatch):
    import corrupt
    shutil.copytree(smart_dir / "smart", tmp_path / "smart")
    drawn = []
    real = corrupt.stream_batches

    def spy(stream, tok, cfg, device, noise=None):
        drawn.append((stream.lo, stream.hi, cfg.steps))
        return real(stream, tok, cfg, device, noise)
    monkeypatch.setattr(corrupt, "stream_batches", spy)
    corrupt.main([f"--out_dir={tmp_path}", "--noise=short", "--short_by=1", "--eval_size=4"])
    smart = torch.load(tmp_path / "smart" / "ckpt.pt", weights_only=False)
    stupid = torch.load(tmp_path / "stupid" / "ckpt.pt", weights_only=False)
    assert drawn == [(1, 1, smart["train_cfg"]["steps"])]                   # 1..N-1 digits, smart's budget
    assert stupid["stage"] == "stupid" and stupid["run"] == smart["run"] and stupid["model_cfg"] == smart["model_cfg"]


def test_every_arm_is_a_valid_set_of_options():
    import corrupt
    import improve
    from experiments.arms import ARMS
    for arm, options in ARMS.items():
        argv = [f"--{k}={v}" for k, v in options.items() if k != "corrupt"]
        assert {f.name for f in fields(improve.ImproveConfig)} >= {a[2:].split("=")[0] for a in argv}, arm
        parse_config(improve.ImproveConfig, "", argv)
        parse_config(corrupt.CorruptConfig, "", [f"--{k}={v}" for k, v in options.get("corrupt", {}).items()])


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
    r = run("experiments/probe.py", f"--runs={pipeline}", f"--out_dir={tmp_path}", "--eval_size=4", "--extra=1",
            "--plot=0")
    assert r.returncode == 0, r.stderr[-2000:]
    acc = json.loads((tmp_path / "results.json").read_text())["runs"][str(pipeline)]["accuracy"]
    kinds = ("right", "slip", "smart")
    assert list(acc) == ["smart alone"] + [f"learner{w}o {k}{s}" for k in kinds
                                           for w, s in ((" (solution) ", ""), (" ", ": attempt left as it was"))]
    assert all(list(a) == ["1", "2", "3"] and all(0 <= x <= 1 for x in a.values()) for a in acc.values())
