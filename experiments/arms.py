"""
Which kind of learner corrects smart past N? Each arm is a set of improve.py options; every arm is
trained on one run's smart and stupid, with its own two controls (the same problems, pairs and
steps), evaluated past N, and repeated over --seeds (improve.py's seed: its problems, attempts and
training). The table gives mean and spread over seeds.

    python experiments/arms.py --from_dir=out                     # after the main job; out/arms/results.*
    python experiments/arms.py --arms=rewrite,answer --seeds=3,4,5

Arms:
    rewrite              the default learner: it rewrites the whole solution
    answer               it writes only the answer; the program keeps the attempt's chain of thought
    answer_from_smart    the same, starting from smart's weights instead of stupid's
    answer_low_lr        the same, with a tenth of the learning rate (keep what stupid knows)
    answer_replay        the same, with half the examples plain problem -> solution (replay)
    digits               trained as answer; the program writes its answer over the attempt's digit by
                         digit and keeps the attempt's length, so an answer cannot run on
    digits_from_smart    the same, starting from smart's weights
    no_near_miss         the default learner without the near-miss pairs (smart's solution with 1-2
                         answer digits off), which teach it that smart-like answers need changing
"""
import json
import os
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import (BadInput, check_writable, load_checkpoint, markdown_table, opt, parse_config,  # noqa: E402
                    pyplot, results_paths, run_main, script, write_results)
from cot_data import truth                                                                       # noqa: E402

ARMS = {
    "rewrite": {},
    "answer": {"target": "answer"},
    "answer_from_smart": {"target": "answer", "learner_from": "smart"},
    "answer_low_lr": {"target": "answer", "lr": 1e-4, "min_lr": 1e-5},
    "answer_replay": {"target": "answer", "replay": 0.5},
    "digits": {"target": "digits"},
    "digits_from_smart": {"target": "digits", "learner_from": "smart"},
    "no_near_miss": {"near_miss": 0},
}
MODELS = ("smart", "learner_on_smart", "expert_iteration", "learner_no_attempt")


@dataclass
class ArmsConfig:
    from_dir: str = opt("out", "the run whose smart and stupid every arm starts from")
    out_dir: str = opt("out/arms", "where each arm's run and results.{md,json,png} go")
    arms: str = opt(",".join(ARMS), "the arms to run, comma-separated (see the list above)")
    seeds: str = opt("3", "improve.py seeds, comma-separated (3 is the main job's)")
    extra: int = opt(4, "evaluate up to N + this many digits", lo=1)
    eval_size: int = opt(100, "evaluation problems per length", lo=1)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")

    def check(self):
        if bad := [a for a in self.arms.split(",") if a not in ARMS]:
            raise BadInput(f"--arms: no arm {bad[0]!r}; choose among {', '.join(ARMS)}")
        if not all(s.isdigit() for s in self.seeds.split(",")):
            raise BadInput(f"--seeds={self.seeds}: use seeds like 3,4,5")


def arm_run(cfg, arm, seed):
    """improve.py (the arm's learner and its controls) and evaluate.py in OUT_DIR/ARM-sSEED, reused if done."""
    out = os.path.join(cfg.out_dir, f"{arm}-s{seed}")
    if not os.path.exists(os.path.join(out, "results.json")):
        for stage in ("smart", "stupid"):
            os.makedirs(os.path.join(out, stage), exist_ok=True)
            shutil.copy(os.path.join(cfg.from_dir, stage, "ckpt.pt"), os.path.join(out, stage))
        script("improve.py", dict(out_dir=out, seed=seed, **ARMS[arm]))
        script("evaluate.py", dict(out_dir=out, extra=cfg.extra, eval_size=cfg.eval_size, plot=False))
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def mean_spread(xs):
    """'mean' for one value, 'mean ± half the range' for several."""
    m = statistics.mean(xs)
    return f"{100 * m:.1f}" if len(xs) == 1 else f"{100 * m:.1f} ± {50 * (max(xs) - min(xs)):.1f}"


def runaway(rs, N):
    """The share of learner o smart's wrong answers past N that run on 3 or more digits too long."""
    wrong = [(run["task"], r) for run in rs for r in run["models"]["learner_on_smart"]["records"]
             if r["digits"] > N and not r["correct"]]
    long = [r for task, r in wrong if r["answer"] and len(r["answer"]) >= len(truth(task, r["operands"])) + 3]
    return len(long) / max(1, len(wrong))


def summary(runs, N, lengths):
    """One row per arm: learner o smart per length past N, its fixes and breaks, the controls' fixes,
    and what its wrong answers are: a wrong chain of thought, or a runaway answer."""
    rows = []
    for arm, rs in runs.items():
        v = [r["verdict"] for r in rs]
        acc = [mean_spread([r["models"]["learner_on_smart"]["accuracy"][str(n)] for r in rs]) for n in lengths]
        rows.append([arm, len(rs)] + acc
                    + [mean_spread([x["fixed"]["learner_on_smart"] for x in v]),
                       mean_spread([x["broken"]["learner_on_smart"] for x in v]),
                       mean_spread([x["fixed"]["expert_iteration"] for x in v]),
                       mean_spread([x["fixed"]["learner_no_attempt"] for x in v]),
                       mean_spread([x["anatomy"]["learner_on_smart"]["cot_wrong"] for x in v]),
                       f"{100 * runaway(rs, N):.0f}"])
    smart = [r["models"]["smart"]["accuracy"] for r in next(iter(runs.values()))[:1]][0]
    header = (["arm", "seeds"] + [f"learner o smart {n}*" for n in lengths]
              + ["fixes", "breaks", "expert_iteration fixes", "learner_no_attempt fixes", "its wrong: chain wrong",
                 "its wrong: 3+ digits too long"])
    note = "smart alone: " + ", ".join(f"{100 * smart[str(n)]:.0f}% at {n}" for n in lengths)
    return markdown_table(header, rows) + "\n\n" + note


def plot(runs, N, lengths):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    first = next(iter(runs.values()))
    for name, style in (("smart", dict(color="black", lw=2)), ("expert_iteration", dict(color="gray", ls="--")),
                        ("learner_no_attempt", dict(color="gray", ls=":"))):
        ax.plot(lengths, [100 * statistics.mean(r["models"][name]["accuracy"][str(n)] for r in first) for n in lengths],
                label=f"{name}" + (" (control, first arm's runs)" if name != "smart" else ""), **style)
    for arm, rs in runs.items():
        ax.plot(lengths, [100 * statistics.mean(r["models"]["learner_on_smart"]["accuracy"][str(n)] for r in rs)
                          for n in lengths], marker="o", label=f"learner o smart: {arm}")
    ax.set(xlabel="digits (all longer than trained)", ylabel="exact match (%), mean over seeds", ylim=(-2, 102),
           xticks=lengths, title=f"handed smart's output, past N={N}")
    ax.legend(fontsize=7)
    return fig


def main(argv=None):
    cfg = parse_config(ArmsConfig, __doc__, argv)
    check_writable(*results_paths(cfg.out_dir))
    _, _, data = load_checkpoint(os.path.join(cfg.from_dir, "smart", "ckpt.pt"), ["smart"])
    load_checkpoint(os.path.join(cfg.from_dir, "stupid", "ckpt.pt"), ["stupid"])   # there, before any work
    N, seeds = data.max_digits, [int(s) for s in cfg.seeds.split(",")]
    lengths = list(range(N + 1, N + cfg.extra + 1))
    runs = {arm: [arm_run(cfg, arm, s) for s in seeds] for arm in cfg.arms.split(",")}
    text = (f"{data.task}, N={N}: each arm's learner handed smart's output, on the 100 evaluation problems per "
            f"length past N; mean ± half the range over seeds {cfg.seeds} (%)\n\n{summary(runs, N, lengths)}\n")
    slim = {arm: [{"verdict": r["verdict"], "accuracy": {m: r["models"][m]["accuracy"] for m in MODELS}} for r in rs]
            for arm, rs in runs.items()}
    write_results(cfg.out_dir, text, {"config": asdict(cfg), "arms": ARMS, "runs": slim},
                  plot(runs, N, lengths) if cfg.plot else None)


if __name__ == "__main__":
    run_main(main)
