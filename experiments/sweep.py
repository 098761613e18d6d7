"""
Which chain-of-thought format and position scheme make lengths past N reachable?

Part 1, smart alone: every CoT format x every position scheme, the same small model, data and
budget, trained on 1..N digits and tested on 1..3N. Part 2: the best cells again at a second
model size. Part 3: the whole experiment (corrupt -> improve -> evaluate on 1..3N) on the best
cell, once per way of making stupid (own samples, static noise, dynamic noise).

    python -m experiments.sweep                     # writes out/sweep/results.{json,md,png}
    python -m experiments.sweep --jobs=1 --parts=1  # part 1 only, one run at a time
    python -m experiments.sweep --parts=1 --only=reverse-abacus,steps-none --seed=2
    --out_dir=out/sweep_s2

Runs go --jobs at a time, each on one CPU thread, so wall times are per thread. Finished runs
are reused (their results.json / ckpt.pt), so an interrupted sweep picks up where it stopped.
"""

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

from cli import BadInput, check_writable, opt, parse_config, run_main
from common import load_checkpoint, score, tokenizer_from
from cot_data import TASKS, accuracy_by_digits, eval_problems, near_miss
from experiments.study import reach, script
from report import markdown_table, pyplot, results_paths, write_results


@dataclass
class SweepConfig:
    out_dir: str = opt("out/sweep", "where every run and results.{md,json,png} go")
    task: str = opt("add", "the task of every smart in the sweep", choices=TASKS)
    max_digits: int = opt(5, "N: smart is trained on 1..N digits and tested on 1..3N", lo=1)
    steps: int = opt(1000, "training steps of every smart", lo=1)
    eval_size: int = opt(50, "test problems per length", lo=1)
    jobs: int = opt(2, "runs at a time, one CPU thread each", lo=1)
    parts: str = opt(
        "123",
        "which parts to run: 1 (formats x positions), 2 (best cells at the larger size), "
        "3 (the whole experiment on the best cell)",
    )
    top: int = opt(3, "how many of the best cells part 2 runs again", lo=1)
    only: str = opt(
        "", "part 1 only on these cells, as fmt-pos,fmt-pos (e.g. reverse-abacus) [default: all]"
    )
    seed: int = opt(1337, "random seed of every smart", lo=0)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")

    def check(self):
        if not self.parts or set(self.parts) - set("123"):
            raise BadInput(f"--parts={self.parts}: use digits among 1, 2, 3 (e.g. 12)")
        if self.only and (bad := [c for c in self.only.split(",") if c not in CELL_NAMES]):
            raise BadInput(
                f"--only={self.only}: no such cell {bad[0]} (fmt-pos, e.g. reverse-abacus)"
            )


SIZES = {
    "small": dict(dim=96, n_layers=3, ffn_hidden=384),
    "default": dict(dim=128, n_layers=4, ffn_hidden=512),
}
FORMATS = ["plain", "steps", "compact", "hints", "reverse"]
# position schemes; abacus0 is abacus without the random offset in training (untrained indices past
# N)
POSITIONS = {
    "learned": dict(pos="learned"),
    "rope": dict(pos="rope"),
    "none": dict(pos="none"),
    "abacus0": dict(pos="abacus", abacus_offset=0),
    "abacus": dict(pos="abacus", abacus_offset=20),
}
EXTRA_CELLS = [("answer", "abacus"), ("answer", "none")]  # no chain of thought at all
CELLS = [(f, p, "small") for f in FORMATS for p in POSITIONS] + [
    (f, p, "small") for f, p in EXTRA_CELLS
]
CELL_NAMES = {f"{f}-{p}" for f, p, _ in CELLS}


def smart_run(cell, cfg):
    """Train one smart model (unless done) and measure it on 1..3N. -> result dict."""
    fmt, pos, size = cell
    out = os.path.join(cfg.out_dir, f"{fmt}-{pos}-{size}")
    result_path = os.path.join(out, "smart.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    N, t0 = cfg.max_digits, time.time()
    script(
        "train.py",
        dict(
            out_dir=out,
            task=cfg.task,
            fmt=fmt,
            max_digits=N,
            steps=cfg.steps,
            eval_every=0,
            eval_extra=0,
            block_size=512,
            seed=cfg.seed,
            **SIZES[size],
            **POSITIONS[pos],
        ),
        threads=1,
    )
    train_s = time.time() - t0
    model, _, data = load_checkpoint(os.path.join(out, "smart", "ckpt.pt"))
    problems = eval_problems(data.task, data.fmt, range(1, 3 * N + 1), cfg.eval_size)
    recs = score(model, tokenizer_from(data), problems)
    acc = accuracy_by_digits(recs)
    near = [
        near_miss(r["answer"], p.answer)
        for p, r in zip(problems, recs)
        if N < p.digits <= N + 3 and not r["correct"]
    ]
    res = dict(
        fmt=fmt,
        pos=pos,
        size=size,
        params=model.num_params(),
        train_s=round(train_s),
        accuracy=acc,
        in_dist=sum(acc[str(n)] for n in range(1, N + 1)) / N,
        past_N=sum(acc[str(n)] for n in range(N + 1, 3 * N + 1)) / (2 * N),
        reach=reach(acc, N),
        near_miss=sum(near) / len(near) if near else None,
    )
    with open(result_path, "w") as f:
        json.dump(res, f)
    return res


def pipeline_run(cell, noise, cfg):
    """corrupt -> improve -> evaluate on 1..3N, starting from the smart model of `cell`."""
    fmt, pos, size = cell
    out = os.path.join(cfg.out_dir, f"{fmt}-{pos}-{size}-stupid_{noise}")
    if not os.path.exists(os.path.join(out, "results.json")):
        t0 = time.time()
        os.makedirs(os.path.join(out, "smart"), exist_ok=True)
        shutil.copy(
            os.path.join(cfg.out_dir, f"{fmt}-{pos}-{size}", "smart", "ckpt.pt"),
            os.path.join(out, "smart"),
        )
        script("corrupt.py", dict(out_dir=out, noise=noise), threads=1)
        script("improve.py", dict(out_dir=out), threads=1)
        script(
            "evaluate.py",
            dict(out_dir=out, extra=2 * cfg.max_digits, eval_size=cfg.eval_size),
            threads=1,
        )
        with open(os.path.join(out, "seconds.txt"), "w") as f:
            f.write(str(round(time.time() - t0)))
    with open(os.path.join(out, "results.json")) as f:
        r = json.load(f)
    with open(os.path.join(out, "seconds.txt")) as f:
        seconds = int(f.read())
    acc = {name: m["accuracy"] for name, m in r["models"].items()}
    return dict(
        fmt=fmt,
        pos=pos,
        size=size,
        noise=noise,
        seconds=seconds,
        accuracy=acc,
        verdict=r["verdict"],
        reach={name: reach(a, cfg.max_digits) for name, a in acc.items()},
    )


def one_thread():
    import torch

    torch.set_num_threads(1)


def parallel(fn, jobs, cfg, n):
    with ProcessPoolExecutor(n, initializer=one_thread) as ex:
        futures = [ex.submit(fn, *job, cfg) for job in jobs]
        return [f.result() for f in futures]


def cell_table(rows, N):
    lengths = range(1, 3 * N + 1)
    header = (
        ["format", "position", "size", "params", "train s"]
        + [f"{n}{'*' if n > N else ''}" for n in lengths]
        + ["mean past N", "reach/N", "near misses"]
    )
    return markdown_table(
        header,
        [
            [r["fmt"], r["pos"], r["size"], f"{r['params'] / 1e6:.2f}M", r["train_s"]]
            + [f"{100 * r['accuracy'][str(n)]:.0f}" for n in lengths]
            + [
                f"{100 * r['past_N']:.1f}",
                f"{r['reach']:.1f}",
                "-" if r["near_miss"] is None else f"{100 * r['near_miss']:.0f}%",
            ]
            for r in rows
        ],
    )


def pipeline_table(rows, N):
    lengths = range(N + 1, 3 * N + 1)
    names = [
        "smart",
        "stupid",
        "learner_on_smart",
        "learner_on_smart_r3",
        "expert_iteration",
        "learner_no_attempt",
        "smart_maj@5",
    ]
    cells = []
    for r in rows:
        for name in names:
            fixed = r["verdict"]["fixed"].get(name)
            cells.append(
                [r["noise"], name]
                + [f"{100 * r['accuracy'][name][str(n)]:.0f}" for n in lengths]
                + [f"{r['reach'][name]:.1f}", "-" if fixed is None else f"{100 * fixed:.1f}%"]
            )
    return markdown_table(
        ["stupid made by", "model"] + [f"{n}*" for n in lengths] + ["reach/N", "fixes"], cells
    )


def plot(rows, N):
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, len(FORMATS), figsize=(4 * len(FORMATS), 3.6), sharey=True)
    lengths = list(range(1, 3 * N + 1))
    for ax, fmt in zip(axes, FORMATS):
        for r in rows:
            if r["fmt"] == fmt and r["size"] == "small":
                ax.plot(
                    lengths,
                    [100 * r["accuracy"][str(n)] for n in lengths],
                    marker=".",
                    label=r["pos"],
                )
        ax.axvline(N + 0.5, color="gray", lw=0.8)
        ax.set(title=fmt, xlabel="digits")
    axes[0].set_ylabel("smart, exact match (%)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None):
    cfg = parse_config(SweepConfig, __doc__, argv)
    check_writable(*results_paths(cfg.out_dir))
    N, t0 = cfg.max_digits, time.time()
    cells = [c for c in CELLS if not cfg.only or f"{c[0]}-{c[1]}" in cfg.only.split(",")]
    rows = parallel(smart_run, [(c,) for c in cells], cfg, cfg.jobs) if "1" in cfg.parts else []
    best = sorted(rows, key=lambda r: (-r["reach"], -r["past_N"]))[: cfg.top]
    if "2" in cfg.parts:
        rows += parallel(
            smart_run, [((r["fmt"], r["pos"], "default"),) for r in best], cfg, cfg.jobs
        )
    pipes = []
    if "3" in cfg.parts and best:
        cell = (best[0]["fmt"], best[0]["pos"], "small")
        pipes = parallel(
            pipeline_run,
            [(cell, noise) for noise in ("sample", "static", "dynamic")],
            cfg,
            cfg.jobs,
        )
    text = (
        f"{cfg.task}, smart trained on 1..{N} digits, {cfg.steps} steps; exact match % on "
        f"{cfg.eval_size} problems per length (* = longer than trained)\n\n{cell_table(rows, N)}\n"
    )
    if pipes:
        text += (
            f"\nThe whole experiment on {pipes[0]['fmt']} + {pipes[0]['pos']} (lengths past N "
            "only):\n\n"
            f"{pipeline_table(pipes, N)}\n"
        )
    text += f"\nsweep wall time: {time.time() - t0:.0f} s with {cfg.jobs} jobs\n"
    write_results(
        cfg.out_dir,
        text,
        {"config": asdict(cfg), "smart": rows, "pipeline": pipes},
        plot(rows, N) if cfg.plot and rows else None,
    )


if __name__ == "__main__":
    run_main(main)
