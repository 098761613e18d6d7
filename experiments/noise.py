"""
Static vs dynamic noise in chain-of-thought training data, at tiny scale (after Havrilla & Iyer
2024).

Trains the same small smart model (train.py, same seed and budget) on clean traces and on traces
with static noise (digits of the chain of thought changed, answer kept; or whole lines dropped) and
dynamic noise (one step goes wrong and the error is carried to the answer), then measures clean
test accuracy per digit length. Also trains the same model with and without a chain of thought
(--fmt=answer) on multiplication.

    python -m experiments.noise                 # writes out/noise/results.{json,md,png}
    python -m experiments.noise --steps=600 --skip_existing
"""

import os
import random
import time
from dataclasses import asdict, dataclass

from cli import BadInput, check_writable, opt, parse_config, run_main
from common import eval_accuracy, load_checkpoint, tokenizer_from
from cot_data import (
    FORMATS,
    TASKS,
    ProblemStream,
    answer_of,
    chain_of,
    check_format,
    dynamic_noise,
    percents,
    static_noise,
    with_completion,
)
from report import markdown_table, pyplot, results_paths, write_results
from train import TrainConfig, train


@dataclass
class NoiseConfig:
    out_dir: str = opt("out/noise", "where every run and results.{md,json,png} go")
    task: str = opt("add", "the task of the noise conditions", choices=TASKS)
    fmt: str = opt("reverse", "the format of the noise conditions", choices=FORMATS)
    max_digits: int = opt(4, "N: trained and tested on 1..N digits", lo=1)
    steps: int = opt(1000, "training steps of every run", lo=1)
    eval_size: int = opt(100, "test problems per length", lo=1)
    dim: int = opt(96, "width of every model", lo=1)
    n_layers: int = opt(3, "layers of every model", lo=1)
    ffn_hidden: int = opt(384, "MLP hidden width of every model", lo=1)
    skip_existing: bool = opt(False, "reuse runs whose checkpoint exists")
    plot: bool = opt(True, "draw results.png (needs matplotlib)")

    def check(self):
        try:
            check_format(self.task, self.fmt)
        except ValueError as e:
            raise BadInput(str(e)) from None


def drop_lines(p, rate, rng):
    """Each line of the chain of thought is left out with probability `rate`."""
    kept = [line + ";" for line in chain_of(p.completion).split(";")[:-1] if rng.random() >= rate]
    return with_completion(p, "".join(kept) + answer_of(p.completion))


def noise_from_spec(spec, rng=None):
    """'none', 'static:R' (R of the CoT digits of every sample), 'lines:R' (each CoT line dropped
    with probability R) or 'dynamic:R' (one carried error in R of the samples) -> problem ->
    problem, or None. rng: the random.Random the noise draws from."""
    if spec == "none":
        return None
    kind, _, rate = spec.partition(":")
    try:
        rate = float(rate)
    except ValueError:
        rate = -1.0
    if kind not in ("static", "lines", "dynamic") or not 0 <= rate <= 1:
        raise ValueError(
            f"bad noise {spec!r}: use none, static:R, lines:R or dynamic:R with 0 <= R <= 1"
        )
    rng = rng or random.Random(0)
    if kind == "static":
        return lambda p: static_noise(p, rate, rng)
    return (
        (lambda p: drop_lines(p, rate, rng))
        if kind == "lines"
        else (lambda p: dynamic_noise(p, rng, rate))
    )


class NoisyStream:
    """train.py's problems with noise put into each (none: as they are)."""

    def __init__(self, stream, noise):
        self.stream = stream
        self.rng = stream.rng  # what a checkpoint saves of the stream
        self.noise = noise

    def sample(self):
        p = self.stream.sample()
        return self.noise(p) if self.noise else p


CONDITIONS = [
    ("clean", "none"),
    ("static 30%", "static:0.3"),
    ("static 70%", "static:0.7"),
    ("static 90%", "static:0.9"),
    ("lines 30%", "lines:0.3"),
    ("lines 50%", "lines:0.5"),
    ("dynamic 10%", "dynamic:0.1"),
    ("dynamic 30%", "dynamic:0.3"),
    ("dynamic 50%", "dynamic:0.5"),
]


def run(name, cfg, task, fmt, noise):
    """Train one model (unless it exists) and measure clean accuracy per length."""
    out = os.path.join(cfg.out_dir, name.replace(" ", "_").replace("%", ""))
    ckpt_path, t0 = os.path.join(out, "smart", "ckpt.pt"), time.time()
    if not (
        cfg.skip_existing and os.path.exists(ckpt_path)
    ):  # train.py, its noise drawn as its seed says
        args = dict(
            out_dir=out,
            task=task,
            fmt=fmt,
            max_digits=cfg.max_digits,
            steps=cfg.steps,
            eval_every=0,
            eval_extra=0,
            dim=cfg.dim,
            n_layers=cfg.n_layers,
            ffn_hidden=cfg.ffn_hidden,
        )
        tcfg = parse_config(TrainConfig, "", [f"--{k}={v}" for k, v in args.items()])
        stream = ProblemStream(task, fmt, 1, tcfg.max_digits, seed=tcfg.seed)  # train.py's own
        train(tcfg, NoisyStream(stream, noise_from_spec(noise, random.Random(tcfg.seed))))
    seconds = time.time() - t0
    model, _, data = load_checkpoint(ckpt_path)
    acc = eval_accuracy(
        model, tokenizer_from(data), data, range(1, data.max_digits + 1), cfg.eval_size
    )
    print(f"{name}: {percents(acc)}")
    return {
        "task": task,
        "fmt": fmt,
        "noise": noise,
        "accuracy": acc,
        "mean": sum(acc.values()) / len(acc),
        "seconds": round(seconds),
    }


def plot(results):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    clean = results["clean"]["mean"]
    for kind, marker in (("static", "o"), ("lines", "s"), ("dynamic", "^")):
        pts = [(0.0, clean)] + [
            (float(r["noise"].split(":")[1]), r["mean"])
            for r in results.values()
            if r["noise"].startswith(kind)
        ]
        ax.plot([100 * x for x, _ in pts], [100 * y for _, y in pts], marker=marker, label=kind)
    ax.set(
        xlabel="noise rate (%)", ylabel="clean test accuracy, mean over lengths (%)", ylim=(-2, 102)
    )
    ax.legend()
    fig.tight_layout()
    return fig


def main(argv=None):
    cfg = parse_config(NoiseConfig, __doc__, argv)
    check_writable(*results_paths(cfg.out_dir))
    results = {name: run(name, cfg, cfg.task, cfg.fmt, spec) for name, spec in CONDITIONS}
    for name, fmt in (("mul with CoT", cfg.fmt), ("mul answer only", "answer")):
        results[name] = run(name, cfg, "mul", fmt, "none")
    lengths = list(results["clean"]["accuracy"])
    table = markdown_table(
        ["training data"] + [f"{n} digits" for n in lengths] + ["mean", "seconds"],
        [
            [f"{name} ({r['task']}, {r['fmt']})"]
            + [f"{100 * r['accuracy'][n]:.0f}" for n in lengths]
            + [f"{100 * r['mean']:.1f}", r["seconds"]]
            for name, r in results.items()
        ],
    )
    write_results(
        cfg.out_dir,
        table,
        {"config": asdict(cfg), "results": results},
        plot(results) if cfg.plot else None,
    )


if __name__ == "__main__":
    run_main(main)
