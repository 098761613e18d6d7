"""Noisy training traces (cot_data.noise_from_spec, train.py --noise) and the noise study script."""
import json
import random

import pytest

from conftest import run
from cot_data import check, make_problem, noise_from_spec, random_operands
from test_cli import one_line_error


def problems(n=50, fmt="plain"):
    rng = random.Random(0)
    return [make_problem("add", random_operands("add", 6, rng), fmt, 6) for _ in range(n)]


def test_noise_specs_do_what_they_say():
    assert noise_from_spec("none") is None
    ps = problems()
    noisy = noise_from_spec("static:0.5")
    static = [noisy(p) for p in ps]
    assert all(check(q.task, q.fmt, q.operands, q.completion)[1] for q in static)   # the answer is kept
    assert sum(q.completion != p.completion for p, q in zip(ps, static)) > 40
    lines = [noise_from_spec("lines:1.0")(p) for p in ps]
    assert all(q.completion.startswith("#") and check(q.task, q.fmt, q.operands, q.completion)[1] for q in lines)
    dynamic = [noise_from_spec("dynamic:1.0")(p) for p in ps]
    assert not any(check(q.task, q.fmt, q.operands, q.completion)[1] for q in dynamic)
    noisy = noise_from_spec("dynamic:0.3", random.Random(1))
    some = [noisy(p) for p in problems(400)]
    assert 0.2 < sum(not check(q.task, q.fmt, q.operands, q.completion)[1] for q in some) / 400 < 0.4


@pytest.mark.parametrize("spec", ["loud", "static", "static:2", "dynamic:x", "lines:-0.1"])
def test_bad_noise_spec(spec):
    with pytest.raises(ValueError, match="bad noise"):
        noise_from_spec(spec)


def test_train_rejects_bad_noise(tmp_path):
    assert "bad noise" in one_line_error(run("train.py", f"--out_dir={tmp_path}", "--noise=loud"))


def test_noise_study_runs_end_to_end(tmp_path):
    r = run("experiments/noise.py", f"--out_dir={tmp_path}", "--steps=3", "--max_digits=1", "--eval_size=4",
            "--dim=16", "--n_layers=1", "--ffn_hidden=32", "--plot=0")
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.load(open(tmp_path / "results.json"))["results"]
    assert {"clean", "static 90%", "lines 50%", "dynamic 10%", "mul answer only"} <= set(d)
    assert d["dynamic 50%"]["noise"] == "dynamic:0.5" and set(d["clean"]["accuracy"]) == {"1"}
    assert "| clean (add, reverse) |" in (tmp_path / "results.md").read_text()
