"""Bad input to every script, as a new user would type it: exit code 2, one line 'error: ...', no
traceback, and no file written or changed. Each script's main() runs in this process through the
same run_main() its command line uses, so the table stays fast."""

import hashlib
import importlib
import os
import shutil

import pytest
import torch
from conftest import TINY

from cli import run_main

# a run that is accepted by mistake must still end in seconds, not train the default model
QUICK_TRAIN = [*TINY, "--max_digits=2", "--steps=2", "--eval_extra=1"]

CASES = {
    "train.py": [
        "--steps=0",
        "--steps=-5",
        "--steps=abc",
        "--steps=2.5",
        "--batch_size=0",
        "--lr=nan",
        "--lr=inf",
        "--lr=0",
        "--lr=-1",
        "--eval_extra=-1",
        "--eval_every=-1",
        "--max_digits=0",
        "--seed=-1",
        "--task=division",
        "--task=gcd",
        "--task=",
        "--fmt=foo",
        "--pos=foo",
        "--n_heads=3",
        "--n_heads=0",
        "--dim=0",
        "--block_size=1",
        "--fmt=plain --block_size=64",
        "--block_size=20",
        "--longest=0",
        "--resume=ture",
        "--noise=static:0.3",
        "--init_from=foo",
        "--init_from=llama:/nonexistent",
        "--init_from=",
        "--device=tpu",
        "--device=",
        "--max_digits=1001",
        "--max_digits=8 --eval_extra=4 --longest=10",
        "--longest=1001",
        "--fmt=hints --max_digits=30",
        "--unknown=1",
        "--resume --steps=1",
        "--out_dir=",
        "--pos=rope --dim=30 --n_heads=2",
        "--pos=abacus_rope --dim=30 --n_heads=2",
        "--abacus_offset=-1",
        "--abacus_offset=1000000000",
    ],
    "sample.py": [
        "--ckpt={out}/nope.pt",
        "--ckpt={out}/learner/pairs.jsonl",
        "--ckpt=",
        "--temperature=-1",
        "--num=0",
        "--top_k=0",
        "--digits=0",
        "--digits=100",
        "--prompt=12+3é=",
        "--prompt=" + "1" * 70 + "+1=",
        "--prompt=" + "1+" * 200 + "1=",
        "--prompt_file=/nonexistent",
        "--prompt_file={out}",
        "--prompt=1+1= --max_new_tokens=1000",
        "--max_new_tokens=0",
        "--init_from=foo",
        "--init_from=llama:/nonexistent",
        "--quiet=maybe",
        "--prompt=",
        "--prompt=1+1= --prompt=",
        "--num=10000000000",
        "--device=tpu",
        "--seed=x",
    ],
    "corrupt.py": [
        "--band_hi=1.5",
        "--band_hi=0",
        "--samples=100000",  # more than one batch of generation
        "--problems=10000000000",  # more than the machine's memory holds
        "--temperature=0",
        "--noise=loud",
        "--noise=short",
        "--problems=0",
        "--samples=0",
        "--steps=0",
        "--lr=nan",
        "--out_dir={out}/empty",
        "--out_dir=",
        "--seed=-1",
    ],
    "improve.py": [
        "--near_miss=1",
        "--attempts=1000",
        "--problems=10000000000",
        "--replay=-0.1",
        "--attempts=0",
        "--attempt_temperature=-1",
        "--problems=0",
        "--steps=0",
        "--lr=0",
        "--out_dir={out}/empty",
        "--out_dir=",
        "--rounds=3",
        "--seed=x",
    ],
    "evaluate.py": [
        "--extra=-3",
        "--extra=0",
        "--k=0",
        "--k=1000",
        "--rounds=0",
        "--rounds=-1",
        "--eval_size=0",
        "--eval_size=201",
        "--extra=100",
        "--out_dir={out}/empty",
        "--out_dir=",
    ],
    "experiments/sweep.py": [
        "--parts=xyz",
        "--parts=",
        "--only=reverse-nope",
        "--jobs=0",
        "--max_digits=0",
    ],
    "experiments/reach.py": [
        "--arm=nope",
        "--arm=",
        "--arm=self",
        "--resume",
        "--rounds=0",
        "--smarts=0",
        "--max_digits=0",
        "--problems=0",
        "--longest=8",
        "--threshold=1.5",
        "--out_dir=/proc/nanocorrect",
        "--out_dir=",
    ],
    "extend.py": [
        "--threshold=1.5",
        "--threshold=0",
        "--longest=8",
        "--max_digits=5 --longest=4",
        "--longest=1001",
        "--abacus_offset=1001",
        "--smarts=0",
        "--problems=0",
        "--ahead=0",
        "--steps=0",
        "--minutes=-1",
        "--rounds=0",
        "--resume",
        "--resume=maybe",
        "--out_dir=/proc/nanocorrect",
        "--out_dir=",
        "--device=tpu",
    ],
    "experiments/noise.py": ["--steps=0", "--task=division", "--eval_size=-1", "--task=median"],
    "experiments/tasks.py": ["--tasks=div", "--tasks=", "--threads=-1"],
    "experiments/digits.py": [
        "--results={out}/nope.json",
        "--results={out}/learner/pairs.jsonl",
        "--models=nope",
        "--results={out}/results.md",
    ],
    "experiments/arms.py": [
        "--arms=nope",
        "--arms=answer,nope",
        "--seeds=x",
        "--seeds=",
        "--extra=0",
        "--from_dir={out}/empty",
    ],
    "experiments/probe.py": [
        "--runs={out}/empty",
        "--runs=",
        "--learners=nope",
        "--learners=stupid",
        "--extra=0",
        "--eval_size=0",
        "--extra=100",
    ],
    "experiments/voters.py": [
        "--run={out}/empty",
        "--run=",
        "--lengths=3",
        "--lengths=0-2",
        "--lengths=4-2",
        "--confidence=x",
        "--confidence=0",
        "--weights=nope",
        "--problems=0",
    ],
    "experiments/rounds.py": [
        "--run={out}/empty",
        "--run=",
        "--rounds=0",
        "--batch_size=0",
        "--problems=0",
        "--keep_optimizer=maybe",
        "--out_dir={out}",
        "--out_dir=/proc/nanocorrect",
    ],
}
EXTRA_ARGS = {"train.py": QUICK_TRAIN}


def module_of(script):
    return importlib.import_module(script[:-3].replace("/", "."))


def snapshot(root):
    """Every file below root with a hash of its bytes."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[path] = hashlib.sha1(fh.read()).hexdigest()
    return out


def expect_one_line_error(script, argv, capsys, watched):
    before = snapshot(watched)
    with pytest.raises(SystemExit) as e:
        run_main(module_of(script).main, argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2, (script, argv, err)
    assert len(err) == 1 and err[0].startswith("error:"), (script, argv, err)
    assert snapshot(watched) == before, f"{script} {argv} changed files"
    return err[0]


@pytest.fixture
def out(pipeline, tmp_path):
    """A writable copy of a whole tiny run (smart, stupid, learner, controls, results)."""
    shutil.copytree(pipeline, tmp_path / "out")
    (tmp_path / "out" / "empty").mkdir()
    return tmp_path / "out"


@pytest.mark.parametrize("script,bad", [(s, b) for s, bads in CASES.items() for b in bads])
def test_bad_input_is_one_line_and_changes_nothing(script, bad, out, capsys):
    if "--device=" in bad and torch.cuda.is_available():
        pytest.skip("a machine with a GPU has more devices")
    argv = [f"--out_dir={out}"]
    if script == "sample.py":
        argv = [f"--ckpt={out}/smart/ckpt.pt"]
    if script == "experiments/arms.py":
        argv = [f"--from_dir={out}", f"--out_dir={out}/study"]
    if script == "experiments/reach.py":
        argv = [f"--out_dir={out}/study"]
    if script == "experiments/probe.py":
        argv = [f"--runs={out}", f"--out_dir={out}/study"]
    if script == "experiments/digits.py":
        argv = [f"--results={out}/results.json"]
    if script in ("experiments/voters.py", "experiments/rounds.py"):
        argv = [f"--out_dir={out}/study"]
    argv += EXTRA_ARGS.get(script, []) + bad.format(out=out).split(" ")
    expect_one_line_error(script, argv, capsys, out)


def set_run(path, run):
    ckpt = torch.load(path, weights_only=False)
    ckpt["run"] = run
    torch.save(ckpt, path)


def test_stages_refuse_checkpoints_of_another_run(out, capsys):
    set_run(out / "learner" / "ckpt.pt", "another")
    assert "another run" in expect_one_line_error("evaluate.py", [f"--out_dir={out}"], capsys, out)
    assert "another run" in expect_one_line_error(
        "experiments/probe.py", [f"--runs={out}", f"--out_dir={out}/r"], capsys, out
    )
    set_run(out / "stupid" / "ckpt.pt", "another")
    assert "another run" in expect_one_line_error("improve.py", [f"--out_dir={out}"], capsys, out)


def test_extend_refuses_a_smart_of_other_options_and_a_run_it_would_overwrite(out, capsys):
    (out / "k0").mkdir()
    shutil.copytree(out / "smart", out / "k0" / "smart")  # trained as N=2, not as extend.py's
    err = expect_one_line_error("extend.py", [f"--out_dir={out}"], capsys, out)
    assert "other options" in err
    shutil.rmtree(out / "k0")
    (out / "state.pt").write_bytes(b"not a run")
    assert "--resume it" in expect_one_line_error("extend.py", [f"--out_dir={out}"], capsys, out)
    err = expect_one_line_error("extend.py", [f"--out_dir={out}", "--resume"], capsys, out)
    assert "not a readable" in err


def test_outputs_that_cannot_be_written_are_refused_before_the_work(out, tmp_path, capsys):
    os.remove(out / "results.md")
    (out / "results.md").mkdir()  # a folder where results.md belongs
    assert "folder" in expect_one_line_error("evaluate.py", [f"--out_dir={out}"], capsys, out)
    (tmp_path / "a_file").write_text("x")
    err = expect_one_line_error(
        "train.py", [f"--out_dir={tmp_path}/a_file", *QUICK_TRAIN], capsys, tmp_path
    )
    assert "not a writable folder" in err
    os.remove(out / "learner" / "pairs.jsonl")
    (out / "learner" / "pairs.jsonl").mkdir()
    assert "folder" in expect_one_line_error("improve.py", [f"--out_dir={out}"], capsys, out)


def test_a_checkpoint_of_the_wrong_stage_is_refused(out, capsys):
    shutil.copy(out / "learner" / "ckpt.pt", out / "smart" / "ckpt.pt")
    assert "stage 'learner'" in expect_one_line_error(
        "corrupt.py", [f"--out_dir={out}"], capsys, out
    )
    assert "stage 'learner'" in expect_one_line_error(
        "train.py", [f"--out_dir={out}", "--resume", *QUICK_TRAIN, "--steps=500"], capsys, out
    )


def test_every_option_says_what_it_does():
    from dataclasses import fields

    configs = [module_of(s) for s in CASES]
    for mod in configs:
        for cls in vars(mod).values():
            if (
                isinstance(cls, type)
                and cls.__name__.endswith("Config")
                and cls.__module__ == mod.__name__
            ):
                for f in fields(cls):
                    assert len(f.metadata.get("help", "")) > 10, (cls.__name__, f.name)


@pytest.mark.parametrize(
    "text,value",
    [("1", True), ("true", True), ("yes", True), ("0", False), ("False", False), ("no", False)],
)
def test_booleans_are_strict(text, value):
    from cli import strict_bool

    assert strict_bool(text) is value


def test_a_checkpoint_from_an_older_version_is_refused(out, capsys):
    ckpt = torch.load(out / "smart" / "ckpt.pt", weights_only=False)
    del ckpt["run"]  # checkpoints before run ids had none
    torch.save(ckpt, out / "smart" / "ckpt.pt")
    for script in ("corrupt.py", "improve.py", "evaluate.py"):
        assert "older nanocorrect" in expect_one_line_error(
            script, [f"--out_dir={out}"], capsys, out
        )


def test_an_empty_prompt_file_is_refused_not_ignored(out, capsys):
    """An empty --prompt_file used to sample fresh problems instead, silently; now it is an error,
    and so is a count of problems the machine cannot hold (it used to hang)."""
    (out / "empty.txt").write_text("\n  \n")
    argv = [f"--ckpt={out}/smart/ckpt.pt", f"--prompt_file={out}/empty.txt"]
    assert "holds no prompt" in expect_one_line_error("sample.py", argv, capsys, out)
    argv = [f"--out_dir={out}", "--problems=10000000000"]
    assert "memory" in expect_one_line_error("corrupt.py", argv, capsys, out)
