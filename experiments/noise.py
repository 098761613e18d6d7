"""
Static vs dynamic noise in chain-of-thought training data, at tiny scale (after Havrilla & Iyer 2024).

Trains the same small smart model (train.py, same seed and budget) on clean traces and on traces
with static noise (digits of the chain of thought changed, answer kept; or whole lines dropped) and
dynamic noise (one step goes wrong and the error is carried to the answer), then measures clean
test accuracy per digit length. Also trains the same model with and without a chain of thought
(--fmt=answer) on multiplication.

    python experiments/noise.py                 # writes out/noise/results.{json,md,png}
    python experiments/noise.py --steps=600 --skip_existing
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.common import pyplot, script, write_results   # noqa: E402
from model import load_checkpoint               # noqa: E402
from sample import tokenizer_from               # noqa: E402
from train import cli, report_accuracy          # noqa: E402

DEFAULTS = dict(out_dir="out/noise", task="add", fmt="reverse", max_digits=4, steps=1000, eval_size=100,
                dim=96, n_layers=3, ffn_hidden=384, skip_existing=False, plot=True)
CONDITIONS = [("clean", "none"), ("static 30%", "static:0.3"), ("static 70%", "static:0.7"),
              ("static 90%", "static:0.9"), ("lines 30%", "lines:0.3"), ("lines 50%", "lines:0.5"),
              ("dynamic 10%", "dynamic:0.1"), ("dynamic 30%", "dynamic:0.3"), ("dynamic 50%", "dynamic:0.5")]


def run(name, cfg, task, fmt, noise):
    """Train one model (unless it exists) and measure clean accuracy per length."""
    out = os.path.join(cfg["out_dir"], name.replace(" ", "_").replace("%", ""))
    ckpt_path, t0 = os.path.join(out, "smart", "ckpt.pt"), time.time()
    if not (cfg["skip_existing"] and os.path.exists(ckpt_path)):
        script("train.py", dict(out_dir=out, task=task, fmt=fmt, noise=noise, max_digits=cfg["max_digits"],
                                steps=cfg["steps"], eval_every=0, eval_size=10, eval_extra=0, dim=cfg["dim"],
                                n_layers=cfg["n_layers"], ffn_hidden=cfg["ffn_hidden"]))
    seconds = time.time() - t0
    model, ckpt = load_checkpoint(ckpt_path)
    acc = report_accuracy(model, tokenizer_from(ckpt["data_cfg"]), ckpt["data_cfg"], cfg["eval_size"], 0, name)
    acc = {str(n): a for n, a in acc.items()}
    return {"task": task, "fmt": fmt, "noise": noise, "accuracy": acc, "mean": sum(acc.values()) / len(acc),
            "seconds": round(seconds)}


def plot(results):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    clean = results["clean"]["mean"]
    for kind, marker in (("static", "o"), ("lines", "s"), ("dynamic", "^")):
        pts = [(0.0, clean)] + [(float(r["noise"].split(":")[1]), r["mean"]) for r in results.values()
                                if r["noise"].startswith(kind)]
        ax.plot([100 * x for x, _ in pts], [100 * y for _, y in pts], marker=marker, label=kind)
    ax.set(xlabel="noise rate (%)", ylabel="clean test accuracy, mean over lengths (%)", ylim=(-2, 102))
    ax.legend()
    return fig


def main():
    cfg = cli(DEFAULTS, __doc__)
    os.makedirs(cfg["out_dir"], exist_ok=True)
    results = {name: run(name, cfg, cfg["task"], cfg["fmt"], spec) for name, spec in CONDITIONS}
    for name, fmt in (("mul with CoT", cfg["fmt"]), ("mul answer only", "answer")):
        results[name] = run(name, cfg, "mul", fmt, "none")
    lengths = list(results["clean"]["accuracy"])
    lines = ["| training data | " + " | ".join(f"{n} digits" for n in lengths) + " | mean | seconds |",
             "|---|" + "---|" * (len(lengths) + 2)]
    for name, r in results.items():
        lines.append(f"| {name} ({r['task']}, {r['fmt']}) | " + " | ".join(f"{100 * r['accuracy'][n]:.0f}" for n in lengths)
                     + f" | {100 * r['mean']:.1f} | {r['seconds']} |")
    write_results(cfg["out_dir"], "\n".join(lines) + "\n", {"config": cfg, "results": results},
                  plot(results) if cfg["plot"] else None)


if __name__ == "__main__":
    main()
