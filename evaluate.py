"""
The experiment's test: accuracy per digit length, 1..N+extra, for every model, on the fixed
evaluation sets, and the verdict - on the problems past N that smart gets wrong, how many does
the learner fix when it is handed smart's output, and how many do the controls get right?

    python evaluate.py                      # reads out/*/ckpt.pt, writes out/results.{md,json,png}
    python evaluate.py --extra=6 --eval_size=200 --rounds=3

Models: smart, stupid, learner (handed no attempt), learner_on_smart (handed smart's output;
_r2, _r3: handed its own previous output again), expert_iteration, learner_no_attempt; and smart's
pass@k and majority@k from k samples.
"""
import os
from dataclasses import dataclass

import torch

from common import (accuracy_by_digits, chance_accuracy, check_room, check_writable, correct, eval_problems,
                    load_checkpoint, majority, markdown_table, mistake_anatomy, opt, parse_config, pick_device, pyplot,
                    results_paths, run_main, score, tokenizer_from, write_results)
from cot_data import MISTAKES

PLAIN_MODELS = ["smart", "stupid", "learner", "expert_iteration", "learner_no_attempt"]
CONTROLS = ("expert_iteration", "learner_no_attempt")


@dataclass
class EvaluateConfig:
    out_dir: str = opt("out", "output root: reads OUT_DIR/*/ckpt.pt, writes OUT_DIR/results.{md,json,png}")
    extra: int = opt(4, "evaluate up to N + this many digits (past N is the test)", lo=1)
    eval_size: int = opt(100, "problems per length (fewer where a length has fewer problems)", lo=1)
    rounds: int = opt(3, "correction rounds: learner_on_smart, then _r2, _r3 ... on its own output", lo=1)
    k: int = opt(5, "samples per problem for smart's pass@k and majority@k", lo=1)
    k_temperature: float = opt(0.7, "temperature of those samples", gt=0)
    seed: int = opt(4, "random seed", lo=0)
    device: str = opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    plot: bool = opt(True, "draw results.png (needs matplotlib)")


def sampled(smart, tok, problems, cfg):
    """pass@k and majority@k of smart from k samples per problem at k_temperature. Each record
    keeps the sample that decides it (a right one for pass@k, one with the majority answer for
    majority@k), so that re-scoring a record's completion gives its verdict."""
    recs = score(smart, tok, problems, temperature=cfg.k_temperature, num_samples=cfg.k, seed=cfg.seed)
    out = {"pass": [], "maj": []}
    for i in range(len(problems)):
        rows = recs[i * cfg.k:(i + 1) * cfg.k]
        out["pass"].append(next((r for r in rows if r["correct"]), rows[0]))
        out["maj"].append(majority(rows)[0] or rows[0])
    return out


def verdict(results, N):
    """On the problems past N that smart gets wrong: the share each model gets right."""
    past = [i for i, r in enumerate(results["smart"]["records"]) if r["digits"] > N and not r["correct"]]
    ok = [i for i, r in enumerate(results["smart"]["records"]) if r["digits"] > N and r["correct"]]
    out = {"smart_wrong_past_N": len(past), "fixed": {}, "broken": {}}
    for name, r in results.items():
        if name not in ("smart", "stupid") and len(r["records"]) == len(results["smart"]["records"]):
            out["fixed"][name] = sum(r["records"][i]["correct"] for i in past) / max(1, len(past))
            out["broken"][name] = sum(not r["records"][i]["correct"] for i in ok) / max(1, len(ok))
    return out


def verdict_lines(v, N, longest):
    lines = [f"On the {v['smart_wrong_past_N']} problems of {N + 1}..{longest} digits that smart gets wrong:"]
    for name, f in v["fixed"].items():
        lines.append(f"  {name:<22} gets {100 * f:5.1f}% right  (and gets {100 * v['broken'][name]:5.1f}% of smart's right ones wrong)")
    learners = {n: f for n, f in v["fixed"].items() if n.startswith("learner_on_smart")}
    controls = {n: v["fixed"][n] for n in CONTROLS if n in v["fixed"]}
    if learners and v["smart_wrong_past_N"]:
        best = max(learners, key=learners.get)
        margin = 100 * (learners[best] - max(controls.values(), default=0.0))
        lines.append(f"Verdict: handed smart's output, the learner ({best}) fixes {100 * learners[best]:.1f}% of "
                     f"smart's mistakes past {N} digits, {abs(margin):.1f} points "
                     f"{'more' if margin > 0 else 'less'} than the best control.")
    return lines


def anatomy_table(anatomy):
    """Why each model's answers past N are wrong: shares of its wrong answers by kind."""
    header = ["model", "wrong past N", "chain of thought wrong", "chain right, answer wrong", "wrong length",
              "near miss (1-2 digits)", "no answer"]
    return markdown_table(header, [[name, a["wrong"]] + [f"{100 * a[k]:.0f}%" for k in MISTAKES]
                                   for name, a in anatomy.items()])


def plot(results, lengths, N):
    """Left: the test (smart, the learner handed smart's output, the two controls). Right: the rest."""
    plt = pyplot()
    if plt is None:   # matplotlib is optional: a text chart instead
        for name, r in results.items():
            print(f"{name:>22} " + "".join(" .:-=+*#%@"[min(9, int(10 * r['accuracy'][str(n)]))] for n in lengths))
        return None
    test = ["smart", "learner_on_smart", *CONTROLS]
    colors = {name: "black" if name == "smart" else f"C{i}" for i, name in enumerate(results)}   # one per model
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, names, title in ((axes[0], [n for n in test if n in results], "the test"),
                             (axes[1], [n for n in results if n not in test[1:]], "the other models (smart for reference)")):
        for name in names:
            ax.plot(lengths, [100 * results[name]["accuracy"][str(n)] for n in lengths], marker="o", label=name,
                    color=colors[name], lw=2.5 if name == "learner_on_smart" else 1.5,
                    linestyle="--" if name in CONTROLS else "-")
        ax.axvline(N + 0.5, color="gray", lw=0.8)
        ax.text(N + 0.6, 3, "longer than trained", color="gray")
        ax.set(title=title, xlabel="digits", ylim=(-2, 102), xticks=lengths)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("exact-match accuracy (%)")
    return fig


def main(argv=None):
    cfg = parse_config(EvaluateConfig, __doc__, argv)
    device, out = pick_device(cfg.device), cfg.out_dir
    check_writable(*results_paths(out))
    torch.manual_seed(cfg.seed)
    smart, smart_ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    models, ckpts = {"smart": smart}, {}
    for name in PLAIN_MODELS[1:]:
        path = f"{out}/{name}/ckpt.pt"
        if os.path.exists(path):
            models[name], ckpts[name], _ = load_checkpoint(path, [name], device, run=smart_ckpt["run"])
        else:
            print(f"(no {path}: {name} is left out)")
    tok, N = tokenizer_from(data), data.max_digits
    lengths = list(range(1, N + cfg.extra + 1))
    problems = eval_problems(data, lengths, cfg.eval_size)
    check_room(models["smart"], tok, problems)
    print(f"evaluating {len(models)} models on {len(problems)} {data.task} problems of 1..{lengths[-1]} digits")

    records = {name: score(m, tok, problems, progress_bar=True) for name, m in models.items()}
    if "learner" in models:   # correction rounds: hand the learner smart's output, then its own
        last, target = records["smart"], ckpts["learner"]["target"]   # what it writes: solution, answer, digits
        for r in range(1, cfg.rounds + 1):
            last = correct(models["learner"], tok, problems, [rec["completion"] for rec in last], target,
                           progress_bar=True)
            records["learner_on_smart" + ("" if r == 1 else f"_r{r}")] = last
    results = {name: {"accuracy": accuracy_by_digits(recs), "records": recs} for name, recs in records.items()}
    for kind, recs in sampled(models["smart"], tok, problems, cfg).items():
        results[f"smart_{kind}@{cfg.k}"] = {"accuracy": accuracy_by_digits(recs),
                                            "records": recs, "note": f"{cfg.k} samples at T={cfg.k_temperature}"}

    v = verdict(results, N)
    v["anatomy"] = {name: mistake_anatomy([x for x in r["records"] if x["digits"] > N], data.task, data.fmt)
                    for name, r in results.items()}
    chance = chance_accuracy(problems)
    sloppy = {name: sum(x["correct"] and not x["verified"] for x in r["records"]) for name, r in results.items()}
    rows = [(name, r["accuracy"]) for name, r in results.items()] + [("chance (the commonest answer)", chance)]
    table = markdown_table(["model"] + [f"{n}{'*' if n > N else ''}" for n in lengths],
                           [[name] + [f"{100 * acc.get(str(n), float('nan')):.0f}" for n in lengths]
                            for name, acc in rows])
    text = (f"{data.task}, trained on 1..{N} digits (* = longer than trained), exact-match %:\n\n{table}\n\n"
            + "".join(f"{name}: {k} right answers with a wrong step (exact match counts them right)\n"
                      for name, k in sloppy.items() if k)
            + "\n".join(verdict_lines(v, N, lengths[-1]))
            + f"\n\nWhy the answers past {N} digits are wrong (share of each model's wrong answers):"
            f"\n\n{anatomy_table(v['anatomy'])}")
    write_results(out, text, {"trained_max_digits": N, "task": data.task, "fmt": data.fmt, "verdict": v,
                              "chance": chance, "models": results}, plot(results, lengths, N) if cfg.plot else None)


if __name__ == "__main__":
    run_main(main)
