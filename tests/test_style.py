"""The code as a reader meets it: formatted by ruff format, clean under ruff check (pyproject.toml),
each file within its line budget counted as formatted, with room to spare (a budget is a ceiling,
not a target), and no function of the core more complex than mccabe 10 (DEVELOPERS.md)."""

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("train.py", "corrupt.py", "improve.py", "evaluate.py", "sample.py", "extend.py")
BUDGETS = {
    **{stage: 250 for stage in STAGES},
    "common.py": 350,  # the shared module
    "model.py": 400,
    "cot_data.py": 480,
    "generate.py": 200,
    "report.py": 200,  # the stages' reports: tables, results files, extend.py's rounds
    "llama.py": 450,
}
SMALL_MODULE = 150  # any other top-level module (cli.py): small, shared by two or more stages
ROOM = 10  # no file within this many lines of its budget
# the core path: what the main job runs (the four stages and every module they import but llama.py)
CORE = ["train.py", "corrupt.py", "improve.py", "evaluate.py", "model.py", "generate.py"]
CORE += ["cot_data.py", "common.py", "cli.py", "report.py"]
CORE_BUDGET = 2500
MAX_COMPLEXITY = 10  # ruff's mccabe C901, on every top-level .py
MAX_STAGE_OPTIONS = 60


def ruff(*args):
    if shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -r requirements.txt")
    return subprocess.run(["ruff", *args], cwd=ROOT, capture_output=True, text=True)


def test_the_tree_is_formatted():
    r = ruff("format", "--check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_tree_passes_the_linter():
    r = ruff("check", ".")
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_function_of_the_core_is_too_complex():
    core = sorted(glob.glob(os.path.join(ROOT, "*.py")))
    config = f"lint.mccabe.max-complexity={MAX_COMPLEXITY}"
    r = ruff("check", "--select", "C901", "--config", config, *core)
    assert r.returncode == 0, r.stdout + r.stderr


def lines(path):
    with open(os.path.join(ROOT, path)) as f:
        return sum(1 for _ in f)


def test_every_file_is_within_its_line_budget_with_room():
    core = [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py"))]
    tight = {}
    for path in core:
        budget = BUDGETS.get(path, SMALL_MODULE)
        if lines(path) > budget - ROOM:
            tight[path] = f"{lines(path)} lines, budget {budget}"
    assert not tight, f"over or within {ROOM} lines of budget: {tight}"
    assert sum(map(lines, CORE)) <= CORE_BUDGET


def test_the_stages_have_at_most_60_options():
    from dataclasses import fields

    import corrupt
    import evaluate
    import improve
    import sample
    import train

    configs = [train.TrainConfig, corrupt.CorruptConfig, improve.ImproveConfig]
    configs += [evaluate.EvaluateConfig, sample.SampleConfig]
    assert sum(len(fields(c)) for c in configs) <= MAX_STAGE_OPTIONS
