import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# a model small enough that every stage runs in seconds on a CPU
TINY = ["--dim=32", "--n_layers=2", "--n_heads=2", "--ffn_hidden=64"]


# extend.py's smarts on a tiny model's recipe (test_extend.py, test_reach.py)
EXTEND_SMART = [*TINY, "--steps=300", "--lr=3e-3", "--abacus_offset=4"]


def tiny_smarts(patch):
    """Make extend.py train its smarts on EXTEND_SMART's recipe (patch: a pytest MonkeyPatch)."""
    import extend

    made = extend.smart_args
    patch.setattr(extend, "smart_args", lambda cfg, k: made(cfg, k) + EXTEND_SMART)


@pytest.fixture
def tiny_extend(monkeypatch):
    """extend.py's smarts made, or checked when reused, on EXTEND_SMART's recipe."""
    tiny_smarts(monkeypatch)


def run(*args, cwd=ROOT):
    """Run a project script as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="session")
def smart_dir(tmp_path_factory):
    """out/ with a tiny smart model, trained for seconds on 1..2 digits: right on some problems."""
    out = tmp_path_factory.mktemp("out")
    r = run(
        "train.py",
        f"--out_dir={out}",
        "--max_digits=2",
        "--steps=300",
        "--lr=3e-3",
        "--abacus_offset=2",
        "--eval_every=0",
        "--eval_extra=1",
        *TINY,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return out


FAST_CORRUPT = ["--problems=48", "--samples=2", "--steps=6", "--temperature=3.0"]
FAST_IMPROVE = ["--problems=48", "--steps=6", "--attempt_temperature=3.0", "--near_miss=0.5"]
FAST_EVAL = ["--eval_size=6", "--extra=1", "--k=2", "--rounds=2"]


@pytest.fixture(scope="session")
def pipeline(smart_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(f"{smart_dir}/smart", out / "smart")
    for script, args in [
        ("corrupt.py", FAST_CORRUPT),
        ("improve.py", FAST_IMPROVE),
        ("evaluate.py", FAST_EVAL),
    ]:
        r = run(script, f"--out_dir={out}", *args)
        assert r.returncode == 0, f"{script}: {r.stderr[-3000:]}"
        (out / f"{script}.log").write_text(r.stdout)
    return out
