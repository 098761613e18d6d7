"""The scripts as a user runs them: --help, and one-line errors with exit code 2 for bad input."""

import os

import pytest
import torch
from conftest import TINY, run

SCRIPTS = ["train.py", "sample.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    r = run(script, "--help")
    assert r.returncode == 0 and "usage" in r.stdout


def one_line_error(r):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr
    return lines[0]


def test_sample_missing_checkpoint(tmp_path):
    assert "no checkpoint" in one_line_error(run("sample.py", f"--ckpt={tmp_path}/nope.pt"))


def test_sample_corrupt_checkpoint(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"\x00garbage")
    assert "not a readable" in one_line_error(run("sample.py", f"--ckpt={tmp_path}/ckpt.pt"))


def test_sample_bad_characters(smart_dir):
    err = one_line_error(run("sample.py", f"--ckpt={smart_dir}/smart/ckpt.pt", "--prompt=12+3é="))
    assert "outside the vocabulary" in err


def test_sample_prompt_file_missing(smart_dir):
    assert "cannot read" in one_line_error(
        run("sample.py", f"--ckpt={smart_dir}/smart/ckpt.pt", "--prompt_file=/nonexistent")
    )


def test_sample_scores_fresh_problems(smart_dir):
    r = run("sample.py", f"--ckpt={smart_dir}/smart/ckpt.pt", "--digits=2", "--num=5")
    assert r.returncode == 0, r.stderr
    assert "add reverse 2 digits:" in r.stdout and "/5 correct" in r.stdout
    r = run(
        "sample.py", f"--ckpt={smart_dir}/smart/ckpt.pt", "--prompt=12+34=", "--max_new_tokens=5"
    )
    assert r.returncode == 0 and r.stdout.startswith("12+34=")


def test_train_bad_task(tmp_path):
    assert "--task" in one_line_error(run("train.py", f"--out_dir={tmp_path}", "--task=division"))


def test_train_resume_needs_a_smart_checkpoint(tmp_path):
    assert "no checkpoint" in one_line_error(run("train.py", f"--out_dir={tmp_path}", "--resume"))


def test_train_writes_checkpoint_and_resumes(smart_dir, tmp_path):
    ckpt = torch.load(f"{smart_dir}/smart/ckpt.pt", weights_only=False)
    assert ckpt["stage"] == "smart" and ckpt["step"] == 300 and ckpt["data_cfg"]["max_digits"] == 2
    assert ckpt["data_cfg"]["tokenizer"]["kind"] == "char" and "optimizer" in ckpt
    import shutil

    shutil.copytree(smart_dir, tmp_path / "out")
    r = run(
        "train.py",
        f"--out_dir={tmp_path}/out",
        "--resume",
        "--steps=310",
        "--eval_every=0",
        "--eval_extra=0",
        *TINY,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert torch.load(f"{tmp_path}/out/smart/ckpt.pt", weights_only=False)["step"] == 310


def test_same_seed_same_numbers(tmp_path):
    outs = []
    for d in ("a", "b"):
        r = run(
            "train.py",
            f"--out_dir={tmp_path}/{d}",
            "--max_digits=2",
            "--steps=15",
            "--eval_every=0",
            "--eval_extra=0",
            *TINY,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(torch.load(f"{tmp_path}/{d}/smart/ckpt.pt", weights_only=False)["model"])
    assert all(torch.equal(outs[0][k], outs[1][k]) for k in outs[0])


def test_sample_prompt_too_long(smart_dir):
    err = one_line_error(
        run("sample.py", f"--ckpt={smart_dir}/smart/ckpt.pt", "--prompt=" + "1" * 70 + "+1=")
    )
    assert "longer than the model supports" in err
    err = one_line_error(
        run("sample.py", f"--ckpt={smart_dir}/smart/ckpt.pt", "--prompt=" + "1+" * 200 + "1=")
    )
    assert "longer than the model supports" in err


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_reproduces_the_run(
    tmp_path, monkeypatch, capsys
):
    """Stopped by Ctrl-C at step 15, a run keeps its step-10 checkpoint; resumed, it ends with
    exactly the weights of a run that was never stopped (the random state of the data and the model
    is saved too)."""
    import train
    from cli import run_main

    args = [*TINY, "--max_digits=2", "--steps=20", "--eval_every=10", "--eval_extra=0"]
    run_main(train.main, [f"--out_dir={tmp_path}/a", *args])
    pack, batches = train.pack, []

    def interrupted_at_15(*a, **kw):  # train.py packs one batch a step: stop at the 16th
        batches.append(1)
        if len(batches) == 16:
            raise KeyboardInterrupt
        return pack(*a, **kw)

    monkeypatch.setattr(train, "pack", interrupted_at_15)
    with pytest.raises(SystemExit) as e:
        run_main(train.main, [f"--out_dir={tmp_path}/b", *args])
    assert e.value.code == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("interrupted") and "Traceback" not in err[0]
    stopped = torch.load(f"{tmp_path}/b/smart/ckpt.pt", weights_only=False)
    assert stopped["step"] == 10
    assert not [
        f for f in os.listdir(f"{tmp_path}/b/smart") if f != "ckpt.pt"
    ]  # no half-written file
    monkeypatch.undo()
    run_main(train.main, [f"--out_dir={tmp_path}/b", *args, "--resume"])
    a, b = (torch.load(f"{tmp_path}/{d}/smart/ckpt.pt", weights_only=False) for d in "ab")
    assert (
        b["step"] == a["step"] == 20 and b["run"] == stopped["run"]
    )  # resuming keeps the run's identity
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
