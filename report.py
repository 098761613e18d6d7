"""
How the stages report: markdown tables and results.{md,json,png} (evaluate.py, extend.py), and
extend.py's rounds: each smart's reach, from each length's share of evaluation problems whose
greedy completion is right at every step, checked in one forward pass a problem. reference() is
where extend.py's run reads the truth; nothing it decides reads this module's numbers.
"""

import json
import os
import statistics

import torch

from common import atomic_write, encode_prompt, write_text
from cot_data import eval_set

SCREEN = 50  # evaluation problems a length at first; all of its EVAL_SIZE where that is close
EVAL_SIZE = 200
GOOD = 0.9  # a length is reached where at least this share is right at every step


def markdown_table(header, rows):
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def results_paths(out_dir):
    """Where write_results puts results.md, results.json and results.png."""
    return [os.path.join(out_dir, f"results.{ext}") for ext in ("md", "json", "png")]


def write_results(out_dir, text, data, fig=None, echo=True):
    """results.md (the text), results.json (everything) and results.png (the plot, if any); echo:
    print the text and what was written."""
    if not echo:
        return write_silently(out_dir, text, data, fig)
    print("\n" + text)
    write_silently(out_dir, text, data, fig)
    print(f"wrote {out_dir}/results.md, results.json{', results.png' if fig is not None else ''}")


def write_silently(out_dir, text, data, fig):
    write_text(f"{out_dir}/results.md", text.rstrip("\n") + "\n")
    write_text(f"{out_dir}/results.json", json.dumps(data))
    if fig is not None:
        atomic_write(f"{out_dir}/results.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        pyplot().close(fig)  # a run that draws every round keeps no figure open


def pyplot():
    """matplotlib.pyplot without a screen, or None where matplotlib (optional) is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        print("(no matplotlib: no results.png)")
        return None


# ----------------------------------------------------------------------------- reach


def reference(problem):
    """The one place the truth is read: a problem's reference completion."""
    return problem.completion


@torch.no_grad()
def read_along(model, tok, prompts, completions):
    """One forward pass over each prompt + completion. -> logits (B, T, V), and y (B, T): the
    completion's token where it is next, -1 elsewhere."""
    rows = [(encode_prompt(tok, p), tok.encode(c)) for p, c in zip(prompts, completions)]
    T = max(len(a) + len(b) for a, b in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T), padding after each
    y = torch.full((len(rows), T), -1)  # (B, T)
    for i, (prompt, completion) in enumerate(rows):
        x[i, : len(prompt) + len(completion) - 1] = torch.tensor(prompt + completion[:-1])
        y[i, len(prompt) - 1 : len(prompt) + len(completion) - 1] = torch.tensor(completion)
    model.eval()
    logits, _ = model(x.to(next(model.parameters()).device))  # (B, T, V)
    return logits.cpu(), y


def every_step_right(model, tok, problems):
    """Whether each problem's greedy completion is its reference, in one forward pass: it is
    exactly where every argmax along the reference is the reference's next token."""
    prompts = [p.prompt for p in problems]
    logits, y = read_along(model, tok, prompts, [reference(p) for p in problems])
    wrong = (logits.argmax(-1) != y) & (y >= 0)  # (B, T)
    return (~wrong.any(1)).tolist()


def measure(model, tok, data, longest):
    """The share right at every step of each length, each on its own evaluation problems, from 1
    up to the first length below GOOD (or to longest: then a lower bound). -> (reach, {L: share})"""
    acc = {}
    for L in range(1, longest + 1):
        problems = eval_set(data.task, L, data.fmt, EVAL_SIZE)  # fewer at the shortest lengths
        right = every_step_right(model, tok, problems[:SCREEN])
        if sum(right) < len(right) - 1 and problems[SCREEN:]:  # close: all of them decide it
            right += every_step_right(model, tok, problems[SCREEN:])
        acc[L] = sum(right) / len(right)
        if acc[L] < GOOD:
            return L - 1, acc
    return longest, acc


# ----------------------------------------------------------------------------- extend.py's rounds


def report_round(smarts, tok, data, kept, longest):
    """A round's report: each smart's reach and accuracy per length, and how many of the round's
    kept labels [(problem, label)] are right at every step."""
    measured = [measure(smart, tok, data, longest) for smart in smarts]
    right = sum(label == reference(p) for p, label in kept)
    return dict(reach=[m[0] for m in measured], accuracy=[m[1] for m in measured], right=right)


ROUND_HEADER = ["round", "frontier", "agreement (%)", "labels kept (right)", "reach (each smart)"]
ROUND_HEADER += ["reach / N", "minutes"]


def round_cells(row, N, longest):
    agree = " ".join(f"{L}:{100 * a:.0f}" for L, a in row["agreement"].items())
    reach = " ".join(f"{x}{'+' if x >= longest else ''}" for x in row["reach"])  # +: at the cap
    mean = statistics.mean(row["reach"]) / N
    kept = f"{row['kept']} ({row['right']})"
    return [row["round"], row["frontier"], agree, kept, reach, f"{mean:.2f}", row["seconds"] // 60]


def row_line(row, N, longest):
    """A round's row as the output shows it when the round ends."""
    return "| " + " | ".join(map(str, round_cells(row, N, longest))) + " |"


def write_rounds(out_dir, state, options, why):
    """extend.py's labels.jsonl and results.{md,json,png} as they stand after a round (options:
    its config as a dict; why: why it stopped, None while it goes on)."""
    N = options["max_digits"]
    longest = options["longest"]
    rows = state["rows"]
    table = markdown_table(ROUND_HEADER, [round_cells(r, N, longest) for r in rows])
    right = sum(r["right"] for r in rows)
    text = f"From N={N}, K={options['smarts']} smarts: {len(state['labels'])} labels kept, {right} "
    text += f"right at every step; {why or 'running'} (a reach of {longest}+ is a lower bound)"
    write_text(f"{out_dir}/labels.jsonl", "".join(json.dumps(x) + "\n" for x in state["labels"]))
    data = dict(config=options, rows=rows)
    write_results(out_dir, f"{text}\n\n{table}", data, rounds_plot(rows, N), echo=why is not None)


def rounds_plot(rows, N):
    """reach / N per round and per minute (the smarts' training included)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    reach = [statistics.mean(r["reach"]) / N for r in rows]
    axes[0].plot([r["round"] for r in rows], reach, marker="o")
    axes[1].plot([r["seconds"] / 60 for r in rows], reach, marker="o")
    axes[0].set(xlabel="round", ylabel="reach / N (mean of the smarts)")
    axes[1].set(xlabel="minutes, the smarts' training included")
    return fig
