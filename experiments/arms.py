"""
Which kind of learner corrects smart past N? Each arm is improve.py's recipe with some changes
(experiments/learners.py); every arm is trained on one run's smart and stupid, with its own two
controls (the same problems, pairs and steps), evaluated past N, probed (experiments/probe.py), and
repeated over --seeds (improve.py's seed: its problems, attempts and training). The table gives mean
and spread over seeds.

    python -m experiments.arms --from_dir=out        # after the main job; out/arms/results.*
    python -m experiments.arms --arms=rewrite,answer --seeds=3,4,5

Arms:
    rewrite              the default learner: it rewrites the whole solution
    answer               it writes only the answer; the program keeps the attempt's chain of thought
    answer_from_smart    the same, starting from smart's weights instead of stupid's
    answer_low_lr        the same, with a tenth of the learning rate (keep what stupid knows)
    answer_replay        the same, with half the examples plain problem -> solution (replay)
    digits               trained as answer; the program writes its answer over the attempt's
                         digit by digit and keeps the attempt's length, so it cannot run on
    digits_from_smart    the same, starting from smart's weights
    no_near_miss         the default learner without the near-miss pairs (smart's solution with 1-2
                         answer digits off), which teach it that smart-like answers need changing
    onpolicy             the default learner, then 3 rounds of expert iteration on it: it corrects
                         fresh attempts at 1..N and trains on its verified fixes
    digits_onpolicy      the same on the digits learner
    short                stupid is a new model of smart's shape trained on 1..N-3 digits: its
                         mistakes at the top lengths are length mistakes, like smart's past N
    short_digits         the same stupid, the digits learner
    freeze_embeddings    the default learner with the token and digit-position tables frozen
    adapter              a rank-8 adapter (LoRA) on a frozen smart, writing whole solutions
    adapter_digits       the same adapter, the digits learner
    adapter_digits_big   a rank-32 adapter with five times the learning rate, the digits learner
"""

import json
import os
import shutil
import statistics
from dataclasses import asdict, dataclass

import evaluate
from cli import BadInput, check_writable, opt, parse_config, run_main
from common import load_checkpoint, pick_device, score, tokenizer_from, write_text
from cot_data import eval_problems, truth
from experiments import probe
from experiments.learners import Arm, improve_arm, short_stupid
from experiments.study import correct_as
from report import markdown_table, pyplot, results_paths, write_results

ARMS = {
    "rewrite": Arm(),
    "answer": Arm(target="answer"),
    "answer_from_smart": Arm(target="answer", learner_from="smart"),
    "answer_low_lr": Arm(target="answer", lr=1e-4),
    "answer_replay": Arm(target="answer", replay=0.5),
    "digits": Arm(target="digits"),
    "digits_from_smart": Arm(target="digits", learner_from="smart"),
    "no_near_miss": Arm(near_miss=0),
    "onpolicy": Arm(rounds=3),
    "digits_onpolicy": Arm(target="digits", rounds=3),
    "short": Arm(short_stupid=True),
    "short_digits": Arm(target="digits", short_stupid=True),
    "freeze_embeddings": Arm(freeze="embeddings"),
    "adapter": Arm(learner_from="smart", freeze="all", adapter=8),
    "adapter_digits": Arm(target="digits", learner_from="smart", freeze="all", adapter=8),
    "adapter_digits_big": Arm(
        target="digits", learner_from="smart", freeze="all", adapter=32, lr=5e-3
    ),
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


def evaluate_arm(out, target, extra, eval_size):
    """evaluate.py on an arm's models, its learner read by its target (study.correct_as): the
    stage's own pieces, with the learner's rounds made here."""
    args = [f"--out_dir={out}", f"--extra={extra}", f"--eval_size={eval_size}"]
    cfg = parse_config(evaluate.EvaluateConfig, "", args)
    models, data = evaluate.load_models(out, pick_device(cfg.device))
    tok = tokenizer_from(data)
    lengths = range(1, data.max_digits + extra + 1)
    problems = eval_problems(data.task, data.fmt, lengths, eval_size)
    records = {name: score(m, tok, problems, progress_bar=True) for name, m in models.items()}
    attempts = [x["completion"] for x in records["smart"]]
    for r in range(1, cfg.rounds + 1):  # as evaluate.learner_rounds, each read by the target
        last = correct_as(models["learner"], tok, problems, attempts, target, progress_bar=True)
        records["learner_on_smart" + ("" if r == 1 else f"_r{r}")] = last
        attempts = [x["completion"] for x in last]
    records.update(evaluate.smart_at_k(models["smart"], tok, problems, cfg.k, cfg.seed))
    evaluate.finish(out, records, problems, data, draw=False)


def arm_run(cfg, name, seed):
    """The arm's stupid (where it has its own), its learner and controls, evaluate.py and the probe
    in OUT_DIR/ARM-sSEED, each reused if done."""
    out, arm = os.path.join(cfg.out_dir, f"{name}-s{seed}"), ARMS[name]
    if not os.path.exists(os.path.join(out, "results.json")):
        for stage in (
            ("smart",) if arm.short_stupid else ("smart", "stupid")
        ):  # its own stupid: from the same smart
            os.makedirs(os.path.join(out, stage), exist_ok=True)
            shutil.copy(os.path.join(cfg.from_dir, stage, "ckpt.pt"), os.path.join(out, stage))
        log = (short_stupid(out) if arm.short_stupid else "") + improve_arm(out, arm, seed)
        write_text(os.path.join(out, "log.txt"), log)  # what it printed (the rounds' numbers)
        evaluate_arm(out, arm.target, cfg.extra, cfg.eval_size)
    path = os.path.join(out, "probe")
    if not os.path.exists(os.path.join(path, "results.json")):
        probe.main(
            [
                f"--runs={out}",
                f"--out_dir={path}",
                f"--extra={cfg.extra}",
                f"--eval_size={cfg.eval_size}",
                "--plot=0",
            ]
        )
    with (
        open(os.path.join(out, "results.json")) as f,
        open(os.path.join(path, "results.json")) as g,
    ):
        return dict(json.load(f), probe=json.load(g)["runs"][out]["past_N"])


def mean_spread(xs):
    """'mean' for one value, 'mean ± half the range' for several."""
    m = statistics.mean(xs)
    return f"{100 * m:.1f}" if len(xs) == 1 else f"{100 * m:.1f} ± {50 * (max(xs) - min(xs)):.1f}"


def runaway(rs, N):
    """The share of learner o smart's wrong answers past N that run on 3 or more digits too long."""
    wrong = [
        (run["task"], r)
        for run in rs
        for r in run["models"]["learner_on_smart"]["records"]
        if r["digits"] > N and not r["correct"]
    ]
    long = [
        r
        for task, r in wrong
        if r["answer"] and len(r["answer"]) >= len(truth(task, r["operands"])) + 3
    ]
    return len(long) / max(1, len(wrong))


def summary(runs, N, lengths):
    """One row per arm: learner o smart per length past N, its mean past N beside the controls', its
    fixes and breaks, the controls' fixes, what its wrong answers are (a wrong chain of thought, a
    runaway answer), and what the learner gets right where smart is wrong when handed the right
    solution (experiments/probe.py) or nothing."""
    rows = []
    for arm, rs in runs.items():
        v = [r["verdict"] for r in rs]
        acc = [
            mean_spread([r["models"]["learner_on_smart"]["accuracy"][str(n)] for r in rs])
            for n in lengths
        ]
        past = [
            mean_spread(
                [statistics.mean(r["models"][m]["accuracy"][str(n)] for n in lengths) for r in rs]
            )
            for m in ("learner_on_smart", "expert_iteration", "learner_no_attempt")
        ]
        rows.append(
            [arm, len(rs)]
            + acc
            + past
            + [
                mean_spread([x["fixed"]["learner_on_smart"] for x in v]),
                mean_spread([x["broken"]["learner_on_smart"] for x in v]),
                mean_spread([x["fixed"]["expert_iteration"] for x in v]),
                mean_spread([x["fixed"]["learner_no_attempt"] for x in v]),
                mean_spread([x["anatomy"]["learner_on_smart"]["cot_wrong"] for x in v]),
                f"{100 * runaway(rs, N):.0f}",
                mean_spread([r["probe"]["learner o right"]["smart wrong"] for r in rs]),
                mean_spread([x["fixed"]["learner"] for x in v]),
            ]
        )
    smart = [r["models"]["smart"]["accuracy"] for r in next(iter(runs.values()))[:1]][0]
    header = (
        ["arm", "seeds"]
        + [f"learner o smart {n}*" for n in lengths]
        + [
            "past N: learner o smart",
            "past N: expert_iteration",
            "past N: learner_no_attempt",
            "fixes",
            "breaks",
            "expert_iteration fixes",
            "learner_no_attempt fixes",
            "its wrong: chain wrong",
            "its wrong: 3+ digits too long",
            "handed the right solution: right where smart is wrong",
            "handed nothing: right where smart is wrong",
        ]
    )
    note = (
        "smart alone: "
        + ", ".join(f"{100 * smart[str(n)]:.0f}% at {n}" for n in lengths)
        + f"; {100 * statistics.mean(smart[str(n)] for n in lengths):.1f}% past N"
    )
    return markdown_table(header, rows) + "\n\n" + note


FIXED = (
    ("learner o smart", lambda r: r["verdict"]["fixed"]["learner_on_smart"]),
    ("learner handed the right solution", lambda r: r["probe"]["learner o right"]["smart wrong"]),
    ("learner handed nothing", lambda r: r["verdict"]["fixed"]["learner"]),
    ("expert_iteration (control)", lambda r: r["verdict"]["fixed"]["expert_iteration"]),
    ("learner_no_attempt (control)", lambda r: r["verdict"]["fixed"]["learner_no_attempt"]),
)
BROKEN = (
    ("learner o smart", lambda r: r["verdict"]["broken"]["learner_on_smart"]),
    ("learner handed nothing", lambda r: r["verdict"]["broken"]["learner"]),
    ("expert_iteration (control)", lambda r: r["verdict"]["broken"]["expert_iteration"]),
    ("learner_no_attempt (control)", lambda r: r["verdict"]["broken"]["learner_no_attempt"]),
)


COLORS = {
    "learner o smart": "C0",
    "learner handed the right solution": "C1",
    "learner handed nothing": "C2",
    "expert_iteration (control)": "0.45",
    "learner_no_attempt (control)": "0.75",
}


def plot(runs, N):
    """Per arm, above: the share of smart's wrong answers past N each model gets right (the learner
    handed smart's output, the right solution or nothing, and the arm's own two controls); below:
    the share of smart's right answers it gets wrong (handed the right solution is then handed
    smart's output). Bars are means over seeds; whiskers span the seeds."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(max(7, 1.1 * len(runs) + 2), 8), sharex=True)
    width = 0.8 / len(FIXED)  # the same width in both panels
    for ax, bars, title in (
        (axes[0], FIXED, "made right, of smart's wrong answers"),
        (axes[1], BROKEN, "made wrong, of smart's right answers"),
    ):
        for b, (label, value) in enumerate(bars):
            vals = [[100 * value(r) for r in rs] for rs in runs.values()]
            mean = [statistics.mean(v) for v in vals]
            ax.bar(
                [i + (b - (len(bars) - 1) / 2) * width for i in range(len(runs))],
                mean,
                width,
                label=label,
                yerr=[
                    [m - min(v) for m, v in zip(mean, vals)],
                    [max(v) - m for m, v in zip(mean, vals)],
                ],
                color=COLORS[label],
            )
        ax.set(ylim=(0, 100), ylabel="%", title=f"past N={N}: {title}")
    axes[1].set_xticks(
        range(len(runs)),
        [f"{arm} ({len(rs)} seeds)" if len(rs) > 1 else arm for arm, rs in runs.items()],
        rotation=30,
        ha="right",
        fontsize=8,
    )
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def main(argv=None):
    cfg = parse_config(ArmsConfig, __doc__, argv)
    check_writable(*results_paths(cfg.out_dir))
    _, _, data = load_checkpoint(os.path.join(cfg.from_dir, "smart", "ckpt.pt"), ["smart"])
    load_checkpoint(
        os.path.join(cfg.from_dir, "stupid", "ckpt.pt"), ["stupid"]
    )  # there, before any work
    N, seeds = data.max_digits, [int(s) for s in cfg.seeds.split(",")]
    lengths = list(range(N + 1, N + cfg.extra + 1))
    runs = {arm: [arm_run(cfg, arm, s) for s in seeds] for arm in cfg.arms.split(",")}
    text = (
        f"{data.task}, N={N}: each arm's learner handed smart's output, on the {cfg.eval_size} "
        "evaluation problems "
        f"per length past N; mean ± half the range over seeds {cfg.seeds} "
        f"(%)\n\n{summary(runs, N, lengths)}\n"
    )
    slim = {
        arm: [
            {
                "verdict": r["verdict"],
                "accuracy": {m: r["models"][m]["accuracy"] for m in MODELS},
                "probe": r["probe"],
            }
            for r in rs
        ]
        for arm, rs in runs.items()
    }
    write_results(
        cfg.out_dir,
        text,
        {"config": asdict(cfg), "arms": {a: asdict(ARMS[a]) for a in runs}, "runs": slim},
        plot(runs, N) if cfg.plot else None,
    )


if __name__ == "__main__":
    run_main(main)
