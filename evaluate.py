"""
The test: every model's accuracy per length 1..N+extra on the fixed evaluation sets, and the
verdict: of smart's mistakes past N, how many does the learner fix when handed smart's output
(learner_on_smart; _r2, _r3: handed its own output again), and how many do the controls get right?

    python evaluate.py      # reads out/*/ckpt.pt, writes out/results.{md,json,png}

results.png needs matplotlib; without it the rest is written all the same.
"""

import os
from collections import Counter
from dataclasses import dataclass

from cli import check_writable, opt, parse_config, run_main
from common import (
    CONTROLS,
    DEVICE_HELP,
    GENERATE_BATCH,
    MODELS,
    check_room,
    load_checkpoint,
    max_new_for,
    pick_device,
    score,
    tokenizer_from,
)
from cot_data import (
    EVAL_MAX,
    KEEP,
    MISTAKES,
    accuracy_by_digits,
    correction_prompt,
    eval_problems,
    mistake_shares,
    record_of,
)
from report import markdown_table, pyplot, write_results

K_TEMPERATURE = 0.7  # of smart's samples for pass@k and majority@k


@dataclass
class EvaluateConfig:
    out_dir: str = opt("out", "output root: reads OUT_DIR/*/ckpt.pt, writes OUT_DIR/results.*")
    extra: int = opt(4, "evaluate up to N + this many digits (past N is the test)", lo=1)
    eval_size: int = opt(100, "problems per length (at most a fifth of all)", lo=1, hi=EVAL_MAX)
    rounds: int = opt(3, "correction rounds: learner_on_smart, then _r2, _r3 ...", lo=1)
    k: int = opt(5, "smart's samples (at T=0.7) for pass@k and majority@k", lo=1, hi=GENERATE_BATCH)
    seed: int = opt(4, "random seed of those samples", lo=0)
    device: str = opt("auto", DEVICE_HELP)


def correct(learner, tok, problems, attempts, temperature=0.0, seed=0, progress_bar=False):
    """Hand the learner an attempt at each problem: its completion replaces the attempt, unless it
    is KEEP, which keeps the attempt (the record then says kept). -> records (cot_data.record_of)"""
    room = learner.cfg.block_size - max_new_for(problems) - 1  # 1: a Llama prompt's BOS
    longest = learner.cfg.max_digit_index - 1
    prompts = [correction_prompt(p.prompt, a, longest, room) for p, a in zip(problems, attempts)]
    records = score(
        learner, tok, problems, prompts, temperature, seed=seed, progress_bar=progress_bar
    )
    return [
        dict(record_of(p, a), kept=True) if r["completion"] == KEEP else r
        for r, p, a in zip(records, problems, attempts)
    ]


def smart_at_k(smart, tok, problems, k, seed):
    """Smart's pass@k and majority@k, as records: each keeps the sample that decides it (the first
    right one; one with the commonest answer), so results.json re-scores them."""
    samples = score(smart, tok, problems, temperature=K_TEMPERATURE, num_samples=k, seed=seed)
    samples = [samples[i : i + k] for i in range(0, len(samples), k)]
    passed = [next((r for r in rows if r["correct"]), rows[0]) for rows in samples]
    majority = []
    for rows in samples:
        votes = Counter(r["answer"] for r in rows if r["answer"] is not None).most_common(1)
        majority.append(next((r for r in rows if votes and r["answer"] == votes[0][0]), rows[0]))
    return {f"smart_pass@{k}": passed, f"smart_maj@{k}": majority}


def verdict(records, N):
    """On the problems past N that smart gets wrong (right): the share each gets right (wrong)."""
    past = [(i, r["correct"]) for i, r in enumerate(records["smart"]) if r["digits"] > N]
    wrong = [i for i, ok in past if not ok]
    right = [i for i, ok in past if ok]
    others = {name: rs for name, rs in records.items() if name not in ("smart", "stupid")}
    v = {"smart_wrong_past_N": len(wrong), "fixed": {}, "broken": {}}
    for name, rs in others.items():
        v["fixed"][name] = sum(rs[i]["correct"] for i in wrong) / max(1, len(wrong))
        v["broken"][name] = sum(not rs[i]["correct"] for i in right) / max(1, len(right))
    return v


def verdict_lines(v, N, longest):
    count = v["smart_wrong_past_N"]
    lines = [f"On the {count} problems of {N + 1}..{longest} digits that smart gets wrong:"]
    for name, fixed in v["fixed"].items():
        broken = f"(and gets {100 * v['broken'][name]:5.1f}% of smart's right ones wrong)"
        lines.append(f"  {name:<22} gets {100 * fixed:5.1f}% right  {broken}")
    learners = {n: f for n, f in v["fixed"].items() if n.startswith("learner_on_smart")}
    if learners and count:
        best = max(learners, key=learners.get)
        control = max([v["fixed"][n] for n in CONTROLS if n in v["fixed"]], default=0.0)
        margin = 100 * (learners[best] - control)
        lines.append(
            f"Verdict: handed smart's output, the learner ({best}) fixes "
            f"{100 * learners[best]:.1f}% of smart's mistakes past {N} digits, "
            f"{abs(margin):.1f} points {'more' if margin > 0 else 'less'} than the best control."
        )
    return lines


def report(records, accuracy, v, problems, data):
    """results.md: the accuracy table, right answers with a wrong step, the verdict, and why the
    answers past N are wrong. -> (its text, chance: the commonest answer's share per length)"""
    N = data.max_digits
    lengths = sorted({p.digits for p in problems})
    answers = {n: [p.answer for p in problems if p.digits == n] for n in lengths}
    chance = {str(n): max(map(a.count, a)) / len(a) for n, a in answers.items()}
    header = ["model"] + [f"{n}{'*' if n > N else ''}" for n in lengths]
    rows = [*accuracy.items(), ("chance (the commonest answer)", chance)]
    rows = [[name] + [f"{100 * acc[str(n)]:.0f}" for n in lengths] for name, acc in rows]
    text = f"{data.task}, trained on 1..{N} digits (* = longer than trained), exact-match %:\n\n"
    text += markdown_table(header, rows) + "\n\n"
    sloppy = "right answers with a wrong step (exact match counts them right)"
    for name, recs in records.items():
        if count := sum(x["correct"] and not x["verified"] for x in recs):
            text += f"{name}: {count} {sloppy}\n"
    text += "\n".join(verdict_lines(v, N, lengths[-1]))
    text += f"\n\nWhy the answers past {N} digits are wrong"
    text += " (share of each model's wrong answers):\n\n"
    header = ["model", "wrong past N", *MISTAKES.values()]
    rows = [
        [n, a["wrong"]] + [f"{100 * a[k]:.0f}%" for k in MISTAKES] for n, a in v["anatomy"].items()
    ]
    return text + markdown_table(header, rows), chance


def plot(accuracy, N):
    """Left: the test (smart, the learner handed smart's output, the controls); right: the rest."""
    plt = pyplot()
    if plt is None:
        return None
    lengths = [int(n) for n in accuracy["smart"]]
    test = ["smart", "learner_on_smart", *CONTROLS]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    panels = {"the test": test, "the rest": [n for n in accuracy if n not in test[1:]]}
    for ax, (title, names) in zip(axes, panels.items()):
        for name in [n for n in names if n in accuracy]:  # one colour per model, in both panels
            color = "black" if name == "smart" else f"C{list(accuracy).index(name)}"
            width = 2.5 if name == "learner_on_smart" else 1.5
            line = "--" if name in CONTROLS else "-"
            percent = [100 * a for a in accuracy[name].values()]
            ax.plot(lengths, percent, linestyle=line, color=color, lw=width, marker="o", label=name)
        ax.axvline(N + 0.5, color="gray", lw=0.8)
        xlabel = "digits (right of the line: longer than trained)"
        ax.set(title=title, xlabel=xlabel, ylim=(-2, 102), xticks=lengths)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("exact-match accuracy (%)")
    fig.tight_layout()
    return fig


def load_models(out, device):
    """smart and each later model of its run that exists: {name: model}, and smart's DataConfig."""
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    models = {"smart": smart}
    for name in MODELS[1:]:
        path = f"{out}/{name}/ckpt.pt"
        if os.path.exists(path):
            models[name] = load_checkpoint(path, [name], device, run=ckpt["run"])[0]
    return models, data


def learner_rounds(learner, tok, problems, attempts, rounds):
    """The learner handed smart's attempts (learner_on_smart), then its own output (_r2, ...)."""
    records = {}
    for r in range(1, rounds + 1):
        last = correct(learner, tok, problems, attempts, progress_bar=True)
        records["learner_on_smart" + ("" if r == 1 else f"_r{r}")] = last
        attempts = [x["completion"] for x in last]
    return records


def finish(out, records, problems, data, draw=True):
    """Accuracy per length, the verdict and the anatomy of the mistakes past N, written as
    OUT/results.{md,json,png}."""
    N = data.max_digits
    accuracy = {name: accuracy_by_digits(recs) for name, recs in records.items()}
    v = verdict(records, N)
    past = {name: [x for x in recs if x["digits"] > N] for name, recs in records.items()}
    v["anatomy"] = {name: mistake_shares(recs, data.task, data.fmt) for name, recs in past.items()}
    text, chance = report(records, accuracy, v, problems, data)
    results = dict(trained_max_digits=N, task=data.task, fmt=data.fmt, verdict=v, chance=chance)
    results["models"] = {n: dict(accuracy=accuracy[n], records=recs) for n, recs in records.items()}
    write_results(out, text, results, plot(accuracy, N) if draw else None)


def main(argv=None):
    cfg = parse_config(EvaluateConfig, __doc__, argv)
    check_writable(*(f"{cfg.out_dir}/results.{ext}" for ext in ("md", "json", "png")))
    models, data = load_models(cfg.out_dir, pick_device(cfg.device))
    tok = tokenizer_from(data)
    longest = data.max_digits + cfg.extra
    problems = eval_problems(data.task, data.fmt, range(1, longest + 1), cfg.eval_size)
    check_room(models["smart"], tok, problems)
    print(f"evaluating {', '.join(models)} on {len(problems)} problems of 1..{longest} digits")
    records = {name: score(m, tok, problems, progress_bar=True) for name, m in models.items()}
    if "learner" in models:
        smart_output = [x["completion"] for x in records["smart"]]
        records.update(learner_rounds(models["learner"], tok, problems, smart_output, cfg.rounds))
    records.update(smart_at_k(models["smart"], tok, problems, cfg.k, cfg.seed))
    finish(cfg.out_dir, records, problems, data)


if __name__ == "__main__":
    run_main(main)
