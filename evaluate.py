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
import json
import os
from collections import Counter

import torch

from cot_data import eval_set
from model import fail, pick_device
from sample import accuracy_by_digits, correct, score, tokenizer_from
from train import cli, load_or_fail

DEFAULTS = dict(out_dir="out", extra=4, eval_size=100, rounds=3, k=5, k_temperature=0.7,
                seed=4, device="auto", plot=True)
PLAIN_MODELS = ["smart", "stupid", "learner", "expert_iteration", "learner_no_attempt"]


def sampled(smart, tok, problems, cfg):
    """pass@k and majority@k of smart from k samples per problem at k_temperature. Each record
    keeps the sample that decides it (a right one for pass@k, one with the majority answer for
    majority@k), so that re-scoring a record's completion gives its verdict."""
    k = cfg["k"]
    recs = score(smart, tok, problems, temperature=cfg["k_temperature"], num_samples=k, seed=cfg["seed"])
    out = {"pass": [], "maj": []}
    for i in range(len(problems)):
        rows = recs[i * k:(i + 1) * k]
        out["pass"].append(next((r for r in rows if r["correct"]), rows[0]))
        votes = Counter(r["answer"] for r in rows if r["answer"] is not None).most_common(1)
        out["maj"].append(next((r for r in rows if votes and r["answer"] == votes[0][0]), rows[0]))
    return out


def table(results, lengths, N):
    head = "| model | " + " | ".join(f"{n}{'*' if n > N else ''}" for n in lengths) + " |"
    lines = [head, "|" + "---|" * (len(lengths) + 1)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r['accuracy'].get(str(n), float('nan')):.0f}"
                                              for n in lengths) + " |")
    return "\n".join(lines)


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


def plot(results, lengths, N, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:   # a text chart instead
        for name, r in results.items():
            print(f"{name:>22} " + "".join(" .:-=+*#%@"[min(9, int(10 * r['accuracy'][str(n)]))] for n in lengths))
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in results.items():
        ax.plot(lengths, [100 * r["accuracy"][str(n)] for n in lengths], marker="o", label=name,
                linestyle="--" if name in ("stupid", "expert_iteration", "learner_no_attempt") else "-")
    ax.axvline(N + 0.5, color="gray", lw=0.8)
    ax.text(N + 0.6, 3, "longer than trained", color="gray")
    ax.set(xlabel="digits", ylabel="exact-match accuracy (%)", ylim=(-2, 102), xticks=lengths)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def main(argv=None):
    cfg = cli(DEFAULTS, __doc__, argv)
    torch.manual_seed(cfg["seed"])
    device, out = pick_device(cfg["device"]), cfg["out_dir"]
    models, data_cfg = {}, None
    for name in PLAIN_MODELS:
        path = f"{out}/{name}/ckpt.pt"
        if name == "smart" or os.path.exists(path):
            models[name], ckpt = load_or_fail(path, [name], device)
            data_cfg = ckpt["data_cfg"] if name == "smart" else data_cfg
        else:
            print(f"(no {path}: {name} is left out)")
    tok, N, task, fmt = tokenizer_from(data_cfg), data_cfg["max_digits"], data_cfg["task"], data_cfg["fmt"]
    lengths = list(range(1, N + cfg["extra"] + 1))
    if models["smart"].cfg.pos == "abacus" and lengths[-1] >= models["smart"].cfg.max_digit_index:
        fail(f"--extra={cfg['extra']}: {lengths[-1]} digits is longer than the model supports "
             f"(max_digit_index {models['smart'].cfg.max_digit_index})")
    problems = [p for n in lengths for p in eval_set(task, n, fmt, cfg["eval_size"])]
    print(f"evaluating {len(models)} models on {len(problems)} {task} problems of 1..{lengths[-1]} digits")

    records = {name: score(m, tok, problems, progress=True) for name, m in models.items()}
    if "learner" in models:   # correction rounds: hand the learner smart's output, then its own
        last = records["smart"]
        for r in range(1, cfg["rounds"] + 1):
            last = correct(models["learner"], tok, problems, [rec["completion"] for rec in last], progress=True)
            records["learner_on_smart" + ("" if r == 1 else f"_r{r}")] = last
    results = {name: {"accuracy": {str(n): a for n, a in accuracy_by_digits(recs).items()}, "records": recs}
               for name, recs in records.items()}
    for kind, recs in sampled(models["smart"], tok, problems, cfg).items():
        results[f"smart_{kind}@{cfg['k']}"] = {"accuracy": {str(n): a for n, a in accuracy_by_digits(recs).items()},
                                               "records": recs, "note": f"{cfg['k']} samples at T={cfg['k_temperature']}"}

    v = verdict(results, N)
    md = table(results, lengths, N)
    lines = [f"On the {v['smart_wrong_past_N']} problems of {N + 1}..{lengths[-1]} digits that smart gets wrong:"]
    for name, f in v["fixed"].items():
        lines.append(f"  {name:<22} gets {100 * f:5.1f}% right  (and gets {100 * v['broken'][name]:5.1f}% of smart's right ones wrong)")
    learners = {n: f for n, f in v["fixed"].items() if n.startswith("learner_on_smart")}
    controls = {n: v["fixed"][n] for n in ("expert_iteration", "learner_no_attempt") if n in v["fixed"]}
    if learners and v["smart_wrong_past_N"]:
        best = max(learners, key=learners.get)
        margin = 100 * (learners[best] - max(controls.values(), default=0.0))
        lines.append(f"Verdict: handed smart's output, the learner ({best}) fixes {100 * learners[best]:.1f}% of "
                     f"smart's mistakes past {N} digits, {abs(margin):.1f} points "
                     f"{'more' if margin > 0 else 'less'} than the best control.")
    text = f"{task}, trained on 1..{N} digits (* = longer than trained), exact-match %:\n\n{md}\n\n" + "\n".join(lines)
    print("\n" + text)
    with open(f"{out}/results.md", "w") as f:
        f.write(text + "\n")
    with open(f"{out}/results.json", "w") as f:
        json.dump({"trained_max_digits": N, "task": task, "fmt": fmt, "verdict": v, "models": results}, f)
    png = plot(results, lengths, N, f"{out}/results.png") if cfg["plot"] else None
    print(f"wrote {out}/results.md, {out}/results.json" + (f", {png}" if png else ""))


if __name__ == "__main__":
    main()
