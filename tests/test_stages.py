"""The experiment end to end on a tiny config: train -> corrupt -> improve -> evaluate."""

import json
import os
import shutil

import pytest
import torch
from conftest import run
from test_cli import one_line_error

from cot_data import check, eval_exclusions
from improve import training_examples


@pytest.mark.parametrize("script", ["corrupt.py", "improve.py", "evaluate.py"])
def test_help(script):
    r = run(script, "--help")
    assert r.returncode == 0 and "usage" in r.stdout


def test_every_stage_writes_its_checkpoint(pipeline):
    for stage in ["smart", "stupid", "learner", "expert_iteration", "learner_no_attempt"]:
        ckpt = torch.load(pipeline / stage / "ckpt.pt", weights_only=False)
        assert ckpt["stage"] == stage and ckpt["data_cfg"]["task"] == "add" and "model_cfg" in ckpt
    assert "stupid:" in (pipeline / "corrupt.py.log").read_text()
    assert "band" in (pipeline / "corrupt.py.log").read_text()


def test_pairs_never_hold_evaluation_problems(pipeline):
    pairs = [
        json.loads(line) for line in (pipeline / "learner" / "pairs.jsonl").read_text().splitlines()
    ]
    assert pairs
    excl = eval_exclusions("add", 2 + 4)
    for pair in pairs:
        a, b = pair["problem"].rstrip("=").split("+")
        assert (int(a[::-1]), int(b[::-1])) not in excl
        assert check("add", "reverse", [int(a[::-1]), int(b[::-1])], pair["solution"])[1]


def test_attempt_slot_is_used():
    from cot_data import make_problem

    p = make_problem("add", [12, 34], "reverse")
    with_attempt, without = training_examples(
        [
            (p, "00;#999$", p.completion),
            (p, "000;#640$", p.completion),
            (p, "00;#64$", p.completion),
        ]
    )
    assert with_attempt[0][0] == "21+43=00;#999>" and with_attempt[0][1] == p.completion
    assert with_attempt[1] == ("21+43=000;#640>", "$")  # a right attempt: keep it
    assert with_attempt[2] == (
        "21+43=00;#64>",
        p.completion,
    )  # the right answer, a wrong chain: not kept
    assert without == [(p.prompt, p.completion)] * 3


def test_results_json_rescores(pipeline):
    d = json.load(open(pipeline / "results.json"))
    assert d["trained_max_digits"] == 2 and d["task"] == "add"
    names = {
        "smart",
        "stupid",
        "learner",
        "learner_on_smart",
        "learner_on_smart_r2",
        "expert_iteration",
        "learner_no_attempt",
    }
    assert names <= set(d["models"])
    for name, m in d["models"].items():
        by = {}
        for r in m["records"]:
            answer, ok = check(d["task"], d.get("fmt", "reverse"), r["operands"], r["completion"])
            assert ok == r["correct"] and answer == r["answer"], (name, r)
            by.setdefault(str(r["digits"]), []).append(ok)
        assert set(by) == {"1", "2", "3"}
        assert {n: sum(v) / len(v) for n, v in by.items()} == pytest.approx(m["accuracy"])
    assert os.path.exists(pipeline / "results.md")
    table = (pipeline / "results.md").read_text()
    assert "| smart |" in table and "learner_on_smart" in table
    # the error anatomy: every model's wrong answers past N, by kind
    wrong = [r for r in d["models"]["smart"]["records"] if r["digits"] > 2 and not r["correct"]]
    anatomy = d["verdict"]["anatomy"]["smart"]
    assert anatomy["wrong"] == len(wrong) and "Why the answers past 2 digits are wrong" in table
    if wrong:
        assert anatomy["cot_wrong"] + anatomy["answer_wrong"] == pytest.approx(1.0)
    # chance: what always giving each length's commonest answer would score
    from collections import Counter

    from cot_data import eval_set

    for n in (1, 2, 3):
        answers = Counter(p.answer for p in eval_set("add", n, "reverse", 6))
        assert d["chance"][str(n)] == max(answers.values()) / sum(answers.values())


def test_stages_refuse_bad_checkpoints(smart_dir, tmp_path):
    assert "no checkpoint" in one_line_error(run("corrupt.py", f"--out_dir={tmp_path}"))
    assert "no checkpoint" in one_line_error(run("evaluate.py", f"--out_dir={tmp_path}"))
    shutil.copytree(f"{smart_dir}/smart", tmp_path / "smart")
    shutil.copytree(
        f"{smart_dir}/smart", tmp_path / "stupid"
    )  # a smart checkpoint where stupid belongs
    assert "stage 'smart'" in one_line_error(run("improve.py", f"--out_dir={tmp_path}"))
    assert "--noise" in one_line_error(run("corrupt.py", f"--out_dir={tmp_path}", "--noise=loud"))
    shutil.copytree(f"{smart_dir}/smart", tmp_path / "only_smart" / "smart")
    err = one_line_error(run("evaluate.py", f"--out_dir={tmp_path}/only_smart", "--extra=100"))
    assert "longer than the model supports" in err


class AlwaysKeep(torch.nn.Module):
    """A learner that always answers KEEP ('$' alone)."""

    def __init__(self):
        super().__init__()
        from cot_data import CharTokenizer
        from model import ModelConfig

        self.cfg = ModelConfig(
            vocab_size=CharTokenizer().vocab_size,
            dim=4,
            n_layers=1,
            n_heads=1,
            n_kv_heads=1,
            pos="none",
        )
        self.stop = CharTokenizer().stop_id
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx, targets=None, positions=None, mask=None, cache=None, digit_index=None):
        if cache is not None:
            cache.advance(idx.shape[1])
        return torch.nn.functional.one_hot(
            torch.full_like(idx, self.stop), self.cfg.vocab_size
        ).float(), None


def test_keep_leaves_the_attempt_as_it_is():
    from cot_data import CharTokenizer, make_problem
    from evaluate import correct

    p = make_problem("add", [12, 34], "reverse")
    recs = correct(AlwaysKeep(), CharTokenizer(), [p, p], ["00;#64$", "00;#65$"])
    assert recs[0]["kept"] and recs[0]["correct"] and recs[0]["completion"] == "00;#64$"
    assert recs[1]["kept"] and not recs[1]["correct"] and recs[1]["answer"] == "56"


def test_finetune_returns_a_copy_that_depends_on_its_seed_alone(smart_dir):
    from common import Optim, finetune, load_checkpoint, tokenizer_from
    from cot_data import eval_set

    model, _, data = load_checkpoint(f"{smart_dir}/smart/ckpt.pt")
    tok, before = tokenizer_from(data), {k: v.clone() for k, v in model.state_dict().items()}
    examples = [(p.prompt, p.completion) for p in eval_set("add", 2, "reverse", 10)]
    cfg = Optim(steps=3, lr=1e-3, batch_size=4, warmup=1)
    a = finetune(model, examples, cfg, tok, "cpu", "a", seed=1)
    torch.rand(1000)  # other work in between draws random numbers
    b = finetune(model, examples, cfg, tok, "cpu", "b", seed=1)
    c = finetune(model, examples, cfg, tok, "cpu", "c", seed=2)

    def same(m1, m2):
        return all(
            torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values())
        )

    assert all(
        torch.equal(before[k], v) for k, v in model.state_dict().items()
    )  # the model given is untouched
    assert same(a, b) and not same(a, model) and not same(a, c)
