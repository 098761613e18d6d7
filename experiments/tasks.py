"""
The whole experiment on every task, each with its own defaults (cot_data.TASKS: its N and steps):
train, corrupt, improve and evaluate in OUT_DIR/TASK, then one table of what each task gives past N.

    python -m experiments.tasks                        # every task: out/tasks/results.{md,json}
    python -m experiments.tasks --tasks=mul --threads=1

A task whose results.json exists is reused, not run again. The question it answers: is "the learner
cannot beat smart" a property of addition, or does it hold where checking is easier than solving?
"""

import json
import os
import time
from dataclasses import asdict, dataclass

from cli import BadInput, check_writable, opt, parse_config, run_main
from common import write_text
from cot_data import TASKS
from experiments.study import script
from report import markdown_table, results_paths

STAGES = ("train.py", "corrupt.py", "improve.py", "evaluate.py")
MODELS = ("smart", "learner_on_smart", "expert_iteration", "learner_no_attempt")


@dataclass
class TasksConfig:
    out_dir: str = opt("out/tasks", "where each task's run (OUT_DIR/TASK) and results.{md,json} go")
    tasks: str = opt(",".join(TASKS), "the tasks to run, comma-separated")
    threads: int = opt(0, "CPU threads of each stage (0: torch's default)", lo=0)

    def check(self):
        if bad := [t for t in self.tasks.split(",") if t not in TASKS]:
            raise BadInput(f"--tasks: no task {bad[0]!r}; choose among {', '.join(TASKS)}")


def task_run(cfg, task):
    """The four stages with the task's defaults in OUT_DIR/TASK (reused if done) -> results,
    seconds."""
    out = os.path.join(cfg.out_dir, task)
    seconds_path = os.path.join(out, "seconds.json")
    if not os.path.exists(os.path.join(out, "results.json")):
        seconds = {}
        for stage in STAGES:
            t0 = time.time()
            args = {"out_dir": out}
            if stage == "train.py":
                args["task"] = task  # the rest of its options follow the task
            script(stage, args, threads=cfg.threads or None)
            seconds[stage[:-3]] = round(time.time() - t0)
            print(f"{task}: {stage} {seconds[stage[:-3]]}s", flush=True)
        with open(seconds_path, "w") as f:
            json.dump(seconds, f)
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    with open(seconds_path) as f:
        return results, json.load(f)


def past(acc, N):
    """Mean accuracy (%) over the lengths past N."""
    xs = [a for n, a in acc.items() if int(n) > N]
    return 100 * sum(xs) / len(xs)


def row(task, r, seconds):
    N, models, v = r["trained_max_digits"], r["models"], r["verdict"]
    lengths = sorted(int(n) for n in models["smart"]["accuracy"] if int(n) > N)
    a = v["anatomy"]["smart"]
    fixes = {m: 100 * v["fixed"][m] for m in MODELS[1:]}
    best = max(fixes["expert_iteration"], fixes["learner_no_attempt"])
    return (
        [
            f"{task} ({r['fmt']})",
            N,
            f"{100 * models['smart']['accuracy'][str(N)]:.0f}",
            f"{lengths[0]}..{lengths[-1]}",
        ]
        + [f"{past(models[m]['accuracy'], N):.1f}" for m in MODELS]
        + [f"{past(r['chance'], N):.1f}", v["smart_wrong_past_N"]]
        + [f"{fixes[m]:.1f}" for m in MODELS[1:]]
        + [
            "yes"
            if fixes["learner_on_smart"] > best
            else f"no ({fixes['learner_on_smart'] - best:+.1f})",
            f"{100 * a['cot_wrong']:.0f} / {100 * a['wrong_length']:.0f} / "
            f"{100 * a['near_miss']:.0f}",
            " + ".join(str(seconds[s[:-3]]) for s in STAGES) + f" = {sum(seconds.values())}",
        ]
    )


def main(argv=None):
    cfg = parse_config(TasksConfig, __doc__, argv)
    md, js, _ = results_paths(cfg.out_dir)
    check_writable(md, js)
    runs = {task: task_run(cfg, task) for task in cfg.tasks.split(",")}
    header = [
        "task",
        "N",
        "smart at N",
        "past N",
        "smart",
        "learner o smart",
        "expert_iteration",
        "learner_no_attempt",
        "chance",
        "smart wrong past N",
        "fixed by learner o smart",
        "fixed by expert_iteration",
        "fixed by learner_no_attempt",
        "learner beats both controls",
        "smart's wrong past N: chain wrong / wrong length / near miss (%)",
        "seconds: train + corrupt + improve + evaluate",
    ]
    table = markdown_table(header, [row(t, r, s) for t, (r, s) in runs.items()])
    text = (
        "Every task with its defaults; accuracy past N is the mean over N+1..N+4 (%), 'fixed' the "
        "share of "
        "smart's wrong answers past N a model gets right (%):\n\n" + table + "\n"
    )
    print(text)
    write_text(md, text)
    write_text(
        js,
        json.dumps(
            {
                "config": asdict(cfg),
                "tasks": {
                    t: {
                        "seconds": s,
                        "chance": r["chance"],
                        "verdict": r["verdict"],
                        "accuracy": {m: r["models"][m]["accuracy"] for m in MODELS},
                    }
                    for t, (r, s) in runs.items()
                },
            }
        ),
    )
    print(f"wrote {md}, {js}")


if __name__ == "__main__":
    run_main(main)
