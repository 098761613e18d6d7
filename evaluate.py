"""
The test: every model's accuracy per length 1..N+extra on the fixed evaluation sets, and the verdict:
of smart's mistakes past N, how many does the learner fix when handed smart's output (learner_on_smart;
_r2, _r3: handed its own output again), and how many do the controls get right?

    python evaluate.py      # reads out/*/ckpt.pt, writes out/results.{md,json,png}
"""

import json
import os
from collections import Counter
from dataclasses import dataclass

from common import (
    DEVICE_HELP,
    atomic_write,
    check_room,
    check_writable,
    load_checkpoint,
    max_new_for,
    opt,
    parse_config,
    pick_device,
    run_main,
    score,
    write_text,
)
from cot_data import (
    EVAL_MAX,
    KEEP,
    MISTAKES,
    accuracy_by_digits,
    correction_prompt,
    eval_problems,
    judged,
    mistake_shares,
    tokenizer_from,
)

MODELS = ("smart", "stupid", "learner", "expert_iteration", "learner_no_attempt")
CONTROLS = MODELS[3:]


@dataclass
class EvaluateConfig:
    out_dir: str = opt(
        "out", "output root: reads OUT_DIR/*/ckpt.pt, writes OUT_DIR/results.{md,json,png}"
    )
    extra: int = opt(4, "evaluate up to N + this many digits (past N is the test)", lo=1)
    eval_size: int = opt(
        100, "problems per length (fewer where a length has fewer problems)", lo=1, hi=EVAL_MAX
    )
    rounds: int = opt(
        3, "correction rounds: learner_on_smart, then _r2, _r3 ... on its own output", lo=1
    )
    k: int = opt(
        5, "samples per problem (at temperature 0.7) for smart's pass@k and majority@k", lo=1
    )
    seed: int = opt(4, "random seed of those samples", lo=0)
    device: str = opt("auto", DEVICE_HELP)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")


def correct(learner, tok, problems, attempts, **kw):
    """Hand the learner an attempt at each problem: its completion replaces the attempt, unless it is
    KEEP, which keeps the attempt (the record then says kept). -> records (cot_data.judged)"""
    room, run = (
        learner.cfg.block_size - max_new_for(problems) - 1,
        learner.cfg.max_digit_index - 1,
    )  # 1: a BOS
    prompts = [correction_prompt(p.prompt, a, run, room) for p, a in zip(problems, attempts)]
    return [
        dict(judged(p, a), kept=True) if r["completion"] == KEEP else r
        for r, p, a in zip(score(learner, tok, problems, prompts=prompts, **kw), problems, attempts)
    ]


def verdict(records, N):
    """On the problems past N that smart gets wrong (right): the share each model gets right (wrong)."""
    wrong = [i for i, r in enumerate(records["smart"]) if r["digits"] > N and not r["correct"]]
    right = [i for i, r in enumerate(records["smart"]) if r["digits"] > N and r["correct"]]
    others = {name: rs for name, rs in records.items() if name not in ("smart", "stupid")}
    return {
        "smart_wrong_past_N": len(wrong),
        "fixed": {
            n: sum(rs[i]["correct"] for i in wrong) / max(1, len(wrong)) for n, rs in others.items()
        },
        "broken": {
            n: sum(not rs[i]["correct"] for i in right) / max(1, len(right))
            for n, rs in others.items()
        },
    }


def verdict_lines(v, N, longest):
    lines = [
        f"On the {v['smart_wrong_past_N']} problems of {N + 1}..{longest} digits that smart gets wrong:"
    ]
    lines += [
        f"  {name:<22} gets {100 * f:5.1f}% right  (and gets {100 * v['broken'][name]:5.1f}% of smart's right "
        "ones wrong)"
        for name, f in v["fixed"].items()
    ]
    learners = {n: f for n, f in v["fixed"].items() if n.startswith("learner_on_smart")}
    if learners and v["smart_wrong_past_N"]:
        best = max(learners, key=learners.get)
        margin = 100 * (
            learners[best] - max([v["fixed"][n] for n in CONTROLS if n in v["fixed"]], default=0.0)
        )
        lines.append(
            f"Verdict: handed smart's output, the learner ({best}) fixes {100 * learners[best]:.1f}% of "
            f"smart's mistakes past {N} digits, {abs(margin):.1f} points {'more' if margin > 0 else 'less'} "
            "than the best control."
        )
    return lines


def markdown_table(header, rows):
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def write_results(out_dir, text, data, fig=None):
    """results.md (the text), results.json (everything) and results.png (the plot, if there is one)."""
    print("\n" + text)
    write_text(f"{out_dir}/results.md", text.rstrip("\n") + "\n")
    write_text(f"{out_dir}/results.json", json.dumps(data))
    if fig is not None:
        atomic_write(f"{out_dir}/results.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    print(f"wrote {out_dir}/results.md, results.json{', results.png' if fig is not None else ''}")


def plot(accuracy, N):
    """Left: the test (smart, the learner handed smart's output, the controls); right: the other models."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no screen needed
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is optional
        return print("(no matplotlib: no results.png)")
    lengths, test = [int(n) for n in accuracy["smart"]], ["smart", "learner_on_smart", *CONTROLS]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, names, title in zip(
        axes, (test, [n for n in accuracy if n not in test[1:]]), ("the test", "the rest")
    ):
        for name in [n for n in names if n in accuracy]:  # one colour per model, in both panels
            ax.plot(
                lengths,
                [100 * a for a in accuracy[name].values()],
                marker="o",
                label=name,
                color="black" if name == "smart" else f"C{list(accuracy).index(name)}",
                lw=2.5 if name == "learner_on_smart" else 1.5,
                linestyle="--" if name in CONTROLS else "-",
            )
        ax.axvline(N + 0.5, color="gray", lw=0.8)
        ax.set(
            title=title,
            xlabel="digits (right of the line: longer than trained)",
            ylim=(-2, 102),
            xticks=lengths,
        )
        ax.legend(fontsize=8)
    axes[0].set_ylabel("exact-match accuracy (%)")
    fig.tight_layout()
    return fig


def main(
    argv=None, correct=correct
):  # experiments/arms.py hands in how its editing learners correct
    cfg = parse_config(EvaluateConfig, __doc__, argv)
    device, out = pick_device(cfg.device), cfg.out_dir
    check_writable(*(f"{out}/results.{ext}" for ext in ("md", "json", "png")))
    smart, ckpt, data = load_checkpoint(
        f"{out}/smart/ckpt.pt", ["smart"], device
    )  # and the models that were made
    models = {"smart": smart} | {
        n: load_checkpoint(f"{out}/{n}/ckpt.pt", [n], device, run=ckpt["run"])[0]
        for n in MODELS[1:]
        if os.path.exists(f"{out}/{n}/ckpt.pt")
    }
    tok, N = tokenizer_from(data), data.max_digits
    lengths = range(1, N + cfg.extra + 1)
    problems = eval_problems(data.task, data.fmt, lengths, cfg.eval_size)
    check_room(smart, tok, problems)
    print(
        f"evaluating {', '.join(models)} on {len(problems)} {data.task} problems of 1..{lengths[-1]} digits"
    )
    records = {name: score(m, tok, problems, progress_bar=True) for name, m in models.items()}
    last = records["smart"]  # hand the learner smart's output, then its own output again
    for r in range(1, cfg.rounds + 1 if "learner" in models else 1):
        last = records["learner_on_smart" + ("" if r == 1 else f"_r{r}")] = correct(
            models["learner"], tok, problems, [x["completion"] for x in last], progress_bar=True
        )
    k = cfg.k  # smart's pass@k and majority@k: each record keeps the sample that decides it, so it re-scores
    samples = score(smart, tok, problems, temperature=0.7, num_samples=k, seed=cfg.seed)
    samples = [samples[i : i + k] for i in range(0, len(samples), k)]
    records[f"smart_pass@{k}"] = [
        next((r for r in rows if r["correct"]), rows[0]) for rows in samples
    ]
    votes = [
        Counter(r["answer"] for r in rows if r["answer"] is not None).most_common(1)
        for rows in samples
    ]
    records[f"smart_maj@{k}"] = [
        next((r for r in rows if v and r["answer"] == v[0][0]), rows[0])
        for rows, v in zip(samples, votes)
    ]
    v, accuracy = (
        verdict(records, N),
        {name: accuracy_by_digits(recs) for name, recs in records.items()},
    )
    v["anatomy"] = {
        name: mistake_shares([x for x in recs if x["digits"] > N], data.task, data.fmt)
        for name, recs in records.items()
    }
    answers = {
        n: [p.answer for p in problems if p.digits == n] for n in lengths
    }  # chance: always the commonest
    chance = {str(n): max(map(a.count, a)) / len(a) for n, a in answers.items()}
    table = markdown_table(
        ["model"] + [f"{n}{'*' if n > N else ''}" for n in lengths],
        [
            [name] + [f"{100 * acc[str(n)]:.0f}" for n in lengths]
            for name, acc in [*accuracy.items(), ("chance (the commonest answer)", chance)]
        ],
    )
    sloppy = {
        name: sum(x["correct"] and not x["verified"] for x in recs)
        for name, recs in records.items()
    }
    text = (
        f"{data.task}, trained on 1..{N} digits (* = longer than trained), exact-match %:\n\n{table}\n\n"
        + "".join(
            f"{name}: {k} right answers with a wrong step (exact match counts them right)\n"
            for name, k in sloppy.items()
            if k
        )
        + "\n".join(verdict_lines(v, N, lengths[-1]))
        + f"\n\nWhy the answers past {N} digits are wrong (share of each model's wrong answers):\n\n"
        + markdown_table(
            ["model", "wrong past N", *MISTAKES.values()],
            [
                [name, a["wrong"]] + [f"{100 * a[k]:.0f}%" for k in MISTAKES]
                for name, a in v["anatomy"].items()
            ],
        )
    )
    models = {name: {"accuracy": accuracy[name], "records": recs} for name, recs in records.items()}
    write_results(
        out,
        text,
        {
            "trained_max_digits": N,
            "task": data.task,
            "fmt": data.fmt,
            "verdict": v,
            "chance": chance,
            "models": models,
        },
        plot(accuracy, N) if cfg.plot else None,
    )


if __name__ == "__main__":
    run_main(main)
