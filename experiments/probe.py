"""
Does the learner's skill of correcting reach past N? Hand it attempts whose quality is known, at
every length 1..N+extra, and see what it makes of them:
    right       the right solution: a checker-like corrector keeps it
    slip        the right solution with one answer digit replaced by its neighbour's (the slip
                smart makes past N, experiments/digits.py): the chain of thought is right, one
                digit is wrong, and fixing it needs only that column
    smart       smart's own greedy output (learner o smart, as evaluate.py measures it)
For each, the share right and the share left exactly as it was; past N, the share right on the
problems smart gets wrong and on those it gets right. Smart's own accuracy is the line to beat.
The attempts past N are built from the evaluation problems' answers: this is a measurement, and
nothing here trains on them.

    python -m experiments.probe --runs=out                      # the main job's learner
    python -m experiments.probe --runs=out,out/arms/digits-s3 --out_dir=out/probe
"""

import os
import random
from dataclasses import asdict, dataclass

from cli import BadInput, check_writable, opt, parse_config, run_main
from common import DEVICE_HELP, check_room, load_checkpoint, pick_device, score, tokenizer_from
from cot_data import accuracy_by_digits, eval_problems
from experiments.study import correct_as
from report import markdown_table, pyplot, results_paths, write_results

ATTEMPTS = ("right", "slip", "smart")


@dataclass
class ProbeConfig:
    runs: str = opt("out", "run folders with smart/ and learner/ checkpoints, comma-separated")
    learners: str = opt(
        "learner",
        "the learner checkpoints of each run to probe, comma-separated (an on-policy "
        "arm also writes learner_round0, learner_round1, ...: each round's start)",
    )
    out_dir: str = opt("out/probe", "where results.{md,json,png} go")
    extra: int = opt(4, "probe up to N + this many digits", lo=1)
    eval_size: int = opt(100, "problems per length", lo=1)
    seed: int = opt(0, "random seed (which digit slips)", lo=0)
    device: str = opt("auto", DEVICE_HELP)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")


def slipped(completion, rng):
    """The completion with one answer digit replaced by the next one's, where the two differ (a
    right answer whose digits are all alike gets its first digit changed by one instead)."""
    head, _, answer = completion.rpartition("#")
    digits = list(answer.rstrip("$"))
    spots = [i for i in range(len(digits) - 1) if digits[i] != digits[i + 1]]
    if spots:
        i = rng.choice(spots)
        digits[i] = digits[i + 1]
    else:
        digits[0] = str((int(digits[0]) + 1) % 10)
    return f"{head}#{''.join(digits)}$"


def share(xs):
    return sum(xs) / max(1, len(xs))


def probe(run, cfg, device):
    """-> N, accuracy per length {"smart alone": ..., "LEARNER (target) o right": ..., ...}, and
    past N, per learner and attempt: the share right on the problems smart gets wrong and on those
    it gets right, and the share of outputs that are the same as when it is handed smart's
    output."""
    smart, ckpt, data = load_checkpoint(os.path.join(run, "smart", "ckpt.pt"), ["smart"], device)
    tok, rng, N = tokenizer_from(data), random.Random(cfg.seed), data.max_digits
    problems = eval_problems(data.task, data.fmt, range(1, N + cfg.extra + 1), cfg.eval_size)
    check_room(smart, tok, problems)
    own = score(smart, tok, problems)
    attempts = {
        "right": [p.completion for p in problems],
        "slip": [slipped(p.completion, rng) for p in problems],
        "smart": [r["completion"] for r in own],
    }
    acc, past = {"smart alone": accuracy_by_digits(own)}, {}
    wrong = [i for i, r in enumerate(own) if r["digits"] > N and not r["correct"]]
    right = [i for i, r in enumerate(own) if r["digits"] > N and r["correct"]]
    for name in cfg.learners.split(","):
        learner, lckpt, _ = load_checkpoint(
            os.path.join(run, name, "ckpt.pt"), ["learner"], device, run=ckpt["run"]
        )
        target = lckpt.get("target", "solution")  # what it writes (experiments/learners.py)
        recs = {
            kind: correct_as(learner, tok, problems, attempts[kind], target) for kind in ATTEMPTS
        }
        for kind in ATTEMPTS:
            acc[f"{name} ({target}) o {kind}"] = accuracy_by_digits(recs[kind])
            same = [
                dict(r, correct=r["completion"] == a) for r, a in zip(recs[kind], attempts[kind])
            ]
            acc[f"{name} o {kind}: attempt left as it was"] = accuracy_by_digits(same)
            past[f"{name} o {kind}"] = {
                "smart wrong": share([recs[kind][i]["correct"] for i in wrong]),
                "smart right": share([recs[kind][i]["correct"] for i in right]),
                "as handed smart's": share(
                    [
                        recs[kind][i]["completion"] == recs["smart"][i]["completion"]
                        for i in wrong + right
                    ]
                ),
            }
    return N, acc, past, len(wrong), len(right)


def main(argv=None):
    cfg = parse_config(ProbeConfig, __doc__, argv)
    check_writable(*results_paths(cfg.out_dir))
    runs, device = [r for r in cfg.runs.split(",") if r], pick_device(cfg.device)
    if not runs:
        raise BadInput("--runs: give at least one run folder")
    for run in runs:  # every checkpoint there before any work
        _, ckpt, _ = load_checkpoint(os.path.join(run, "smart", "ckpt.pt"), ["smart"])
        for name in cfg.learners.split(","):
            load_checkpoint(os.path.join(run, name, "ckpt.pt"), ["learner"], run=ckpt["run"])
    results, text = {}, []
    for run in runs:
        N, acc, past, n_wrong, n_right = probe(run, cfg, device)
        results[run] = {"trained_max_digits": N, "accuracy": acc, "past_N": past}
        lengths = list(acc["smart alone"])
        rows = [[name] + [f"{100 * a[n]:.0f}" for n in lengths] for name, a in acc.items()]
        text.append(
            f"{run}: exact match %, * = longer than trained; (what the learner writes)\n\n"
            + markdown_table(
                ["handed"] + [f"{n}{'*' if int(n) > N else ''}" for n in lengths], rows
            )
            + f"\n\nPast N: right (%) on the {n_wrong} problems smart gets wrong and the {n_right} "
            "it gets "
            "right, and the share of outputs that are the same as when handed smart's output:\n\n"
            + markdown_table(
                ["handed", "smart wrong", "smart right", "as handed smart's"],
                [[k] + [f"{100 * v:.0f}" for v in x.values()] for k, x in past.items()],
            )
        )
    write_results(
        cfg.out_dir,
        "\n\n".join(text) + "\n",
        {"config": asdict(cfg), "runs": results},
        plot(results) if cfg.plot else None,
    )


def plot(results):
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(
        1, len(results), figsize=(5 * len(results), 4), sharey=True, squeeze=False
    )
    for ax, (run, r) in zip(axes[0], results.items()):
        for i, (name, acc) in enumerate((n, a) for n, a in r["accuracy"].items() if ":" not in n):
            ax.plot(
                [int(n) for n in acc],
                [100 * a for a in acc.values()],
                marker="o",
                label=name,
                color="black" if name == "smart alone" else f"C{i}",
                lw=2 if name == "smart alone" else 1.5,
            )
        ax.axvline(r["trained_max_digits"] + 0.5, color="gray", lw=0.8)
        ax.set(title=run, xlabel="digits", ylim=(-2, 102))
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("exact match (%)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    run_main(main)
