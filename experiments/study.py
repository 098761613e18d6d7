"""What several studies share: a stage run as a user would, reach, and the editing learners."""

import os
import subprocess
import sys

from cot_data import answer_of, chain_of, record_of
from evaluate import correct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, args, threads=None):
    """Run a stage script as a user would (--key=value options); a failure ends with its line."""
    env = dict(
        os.environ,
        **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}),
    )
    r = subprocess.run(
        [sys.executable, name] + [f"--{k}={v}" for k, v in args.items()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{name} {args}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return r.stdout


def reach(acc, N):
    """The longest length L such that every length 1..L has >= 90% accuracy, divided by N."""
    L = 0
    while str(L + 1) in acc and acc[str(L + 1)] >= 0.9:
        L += 1
    return L / N


# What a learner writes (experiments/arms.py): the whole solution (the stages' learner), only the
# answer ("#...$": the program keeps the attempt's chain of thought), or digits (the same, with its
# answer written over the attempt's digit by digit, so that the attempt's length is kept).
TARGETS = ("solution", "answer", "digits")


def written(solution, target):
    """What a learner of this target writes for a solution."""
    return solution if target == "solution" else answer_of(solution)


def overwrite(answer, edit):
    """'#...$' of the attempt, its characters replaced one by one by the edit's: same length."""
    old, new = answer[1:].rstrip("$"), edit[1:].rstrip("$") if edit.startswith("#") else ""
    return "#" + new[: len(old)] + old[len(new) :] + "$"


def correct_as(
    learner, tok, problems, attempts, target="solution", temperature=0.0, seed=0, progress_bar=False
):
    """evaluate.correct for a learner of any target: the program puts an answer-only learner's
    answer (or, for digits, its digits) after the attempt's chain of thought."""
    recs = correct(learner, tok, problems, attempts, temperature, seed, progress_bar)
    if target == "solution":
        return recs
    return [
        r
        if r.get("kept")
        else record_of(
            p,
            chain_of(a)
            + (r["completion"] if target == "answer" else overwrite(answer_of(a), r["completion"])),
        )
        for r, p, a in zip(recs, problems, attempts)
    ]
