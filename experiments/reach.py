"""
How far past N does each method reach? Self-labelling against the learner as labeller.

Both arms start from the same smart model (and the learner of the same run) and spend the same
training steps on the same problems. Round r = 1..R labels fresh problems of N+r digits (never an
evaluation problem) without ground truth, from k samples per problem:
    self        smart's own k samples at --temperature (Lee et al. 2025, "Self-Improving Transformers")
    corrector   the learner handed each of those k samples (learner o smart)
A problem is kept when at least --agree of its k answers agree; its label is a completion with that
answer. Then smart is fine-tuned (--steps) on every label so far, mixed one to one with
ground-truth problems of 1..N digits, and tested on 1..3N. The learner itself is not retrained.

Reach = the longest length L with >= 90% accuracy on every length 1..L, divided by N.

    python -m experiments.reach --from_dir=out              # needs out/smart and out/learner
    python -m experiments.reach --from_dir=out/sweep/reverse-abacus-small-stupid_sample --rounds=5
"""
import time
from collections import Counter
from dataclasses import asdict, dataclass

import torch

from common import (DEVICE_HELP, BadInput, Optim, check_writable, load_checkpoint, opt, pair_batches, parse_config,
                    pick_device, run_main, score, train_loop)
from cot_data import ProblemStream, accuracy_by_digits, eval_problems, tokenizer_from
from evaluate import markdown_table, write_results
from experiments.study import correct_as, pyplot, reach, results_paths


@dataclass
class ReachConfig:
    steps: int = opt(300, "fine-tuning steps of smart per round", lo=1)
    lr: float = opt(5e-4, "peak learning rate of that fine-tuning", gt=0)
    from_dir: str = opt("out", "the run to start from: needs FROM_DIR/smart and FROM_DIR/learner")
    out_dir: str = opt("out/reach", "where results.{md,json,png} go")
    rounds: int = opt(4, "rounds; round r labels problems of N + r digits", lo=1)
    problems: int = opt(512, "fresh problems labelled per round", lo=1)
    k: int = opt(5, "samples of smart per problem (votes)", lo=1)
    temperature: float = opt(0.7, "temperature of those samples", gt=0)
    agree: int = opt(4, "keep a problem when at least this many of its k answers agree", lo=1)
    eval_size: int = opt(50, "test problems per length", lo=1)
    seed: int = opt(5, "random seed", lo=0)
    device: str = opt("auto", DEVICE_HELP)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")

    def check(self):
        if self.agree > self.k:
            raise BadInput(f"--agree={self.agree} cannot be more than --k={self.k}")


def majority(rows):
    """The first of several samples that gives the most common parsed answer (None if none has an answer)."""
    votes = Counter(r["answer"] for r in rows if r["answer"] is not None).most_common(1)
    if not votes:
        return None, 0
    return next(r for r in rows if r["answer"] == votes[0][0]), votes[0][1]


def label(smart, learner, tok, problems, cfg, target="solution"):
    """-> [(prompt, completion)] for the problems whose k answers agree, and how many labels are right."""
    k = cfg.k
    recs = score(smart, tok, problems, temperature=cfg.temperature, num_samples=k, seed=cfg.seed)
    if learner is not None:   # the learner rewrites (or keeps) every one of smart's samples
        recs = correct_as(learner, tok, [p for p in problems for _ in range(k)], [r["completion"] for r in recs], target)
    out, right = [], 0
    for i, p in enumerate(problems):
        best, votes = majority(recs[i * k:(i + 1) * k])
        if votes >= cfg.agree:
            out.append((p.prompt, best["completion"]))
            right += best["correct"]          # read only to report label quality, never to filter
    return out, right


def measure(smart, learner, tok, problems, target="solution"):
    recs = score(smart, tok, problems)
    acc = {"smart": accuracy_by_digits(recs)}
    if learner is not None:
        acc["learner_on_smart"] = accuracy_by_digits(correct_as(learner, tok, problems, [r["completion"] for r in recs],
                                                                target))
    return acc


def run_arm(arm, cfg, device):
    smart, ckpt, d = load_checkpoint(f"{cfg.from_dir}/smart/ckpt.pt", ["smart"], device)
    learner, lckpt, _ = load_checkpoint(f"{cfg.from_dir}/learner/ckpt.pt", ["learner"], device, run=ckpt["run"])
    target = lckpt.get("target", "solution")   # what the learner writes (experiments/learners.py)
    tok, N = tokenizer_from(d), d.max_digits
    labeller = learner if arm == "corrector" else None
    tests = eval_problems(d.task, d.fmt, range(1, 3 * N + 1), cfg.eval_size)
    truth_stream = ProblemStream(d.task, d.fmt, 1, N, seed=cfg.seed)
    rows, labels = [], []
    acc = measure(smart, learner, tok, tests, target)
    t0 = time.time()
    rows.append(dict(arm=arm, round=0, digits=N, kept=0, right=0, seconds=0, accuracy=acc))
    print(f"{arm} round 0: reach smart {reach(acc['smart'], N):.1f}, learner o smart {reach(acc['learner_on_smart'], N):.1f}")
    for r in range(1, cfg.rounds + 1):
        torch.manual_seed(cfg.seed + r)
        n = N + r
        new = ProblemStream(d.task, d.fmt, n, n, seed=cfg.seed + r)
        new_labels, right = label(smart, labeller, tok, [new.sample() for _ in range(cfg.problems)], cfg, target)
        labels += new_labels
        if labels:   # nothing agreed on yet: nothing to learn from this round
            truth = [truth_stream.sample() for _ in range(len(labels))]
            examples = labels + [(p.prompt, p.completion) for p in truth]
            optim = Optim(cfg.steps, cfg.lr, warmup=20)
            train_loop(smart, pair_batches(examples, tok, optim.batch_size, device, seed=cfg.seed + r), optim,
                       desc=f"{arm} round {r}")
        acc = measure(smart, learner, tok, tests, target)
        rows.append(dict(arm=arm, round=r, digits=n, kept=len(new_labels), right=right,
                         seconds=round(time.time() - t0), accuracy=acc))
        print(f"{arm} round {r}: kept {len(new_labels)}/{cfg.problems} labels at {n} digits "
              f"({right} right); reach smart {reach(acc['smart'], N):.1f}, "
              f"learner o smart {reach(acc['learner_on_smart'], N):.1f}")
    return rows, N


def table(rows, N):
    lengths = range(1, 3 * N + 1)
    header = (["arm", "round", "labels kept (right)", "model"] + [f"{n}{'*' if n > N else ''}" for n in lengths]
              + ["reach/N", "seconds"])
    return markdown_table(header, [[r["arm"], r["round"], f"{r['kept']} ({r['right']})", name]
                                   + [f"{100 * acc[str(n)]:.0f}" for n in lengths] + [f"{reach(acc, N):.1f}", r["seconds"]]
                                   for r in rows for name, acc in r["accuracy"].items()])


def plot(rows, N):
    """reach/N, smart's accuracy one and two digits past N, and the share of right labels, per round."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for arm, marker, color in (("self", "o", "C0"), ("corrector", "s", "C1")):
        mine = [r for r in rows if r["arm"] == arm]
        rounds = [r["round"] for r in mine]
        for name, ls in (("smart", "-"), ("learner_on_smart", "--")):
            axes[0].plot(rounds, [reach(r["accuracy"][name], N) for r in mine], marker=marker, linestyle=ls,
                         color=color, label=f"{arm}: {name}")
        for n, ls in ((N + 1, "-"), (N + 2, ":")):
            axes[1].plot(rounds, [100 * r["accuracy"]["smart"][str(n)] for r in mine], marker=marker, linestyle=ls,
                         color=color, label=f"{arm}: smart at {n} digits")
        labelled = [r for r in mine if r["kept"]]
        axes[2].plot([r["round"] for r in labelled], [100 * r["right"] / r["kept"] for r in labelled], marker=marker,
                     color=color, label=f"{arm} (labels at N + round digits)")
    top = max(reach(r["accuracy"][name], N) for r in rows for name in r["accuracy"])
    axes[0].set(xlabel="round", ylabel="reach / N (>= 90% on every length up to it)", ylim=(0, top + 0.5))
    axes[1].set(xlabel="round", ylabel="exact match (%)", ylim=(-2, 102))
    axes[2].set(xlabel="round", ylabel="labels kept that are right (%)", ylim=(-2, 102))
    for ax in axes:
        ax.legend(fontsize=8)
        ax.set_xticks(sorted({r["round"] for r in rows}))
    fig.tight_layout()
    return fig


def main(argv=None):
    cfg = parse_config(ReachConfig, __doc__, argv)
    device = pick_device(cfg.device)
    check_writable(*results_paths(cfg.out_dir))
    rows = []
    for arm in ("self", "corrector"):
        arm_rows, N = run_arm(arm, cfg, device)
        rows += arm_rows
    text = (f"Reach from N={N}: {cfg.rounds} rounds of {cfg.problems} problems, k={cfg.k} at "
            f"T={cfg.temperature}, agreement >= {cfg.agree}, {cfg.steps} steps per round\n\n{table(rows, N)}\n")
    write_results(cfg.out_dir, text, {"config": asdict(cfg), "rows": rows}, plot(rows, N) if cfg.plot else None)


if __name__ == "__main__":
    run_main(main)
