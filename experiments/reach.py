"""
The learner in the loop of stage 5: does a learner of corrections carry the smarts further or faster
than they carry themselves? extend.py's rounds, its smarts, problems, schedule, tuning and report,
with each smart's vote passed through its own learner (made from that smart by corrupt.py and
improve.py's recipe, so the K votes stay independent). One arm a run:

    corrector   a smart's vote is its learner's correction of the smart's greedy completion (KEEP:
                the completion as it is); each learner is then tuned on its round's pairs (its
                smart's attempt -> the kept label; KEEP where they are the same) as extend.py tunes
                a smart: half the round's pairs, a quarter earlier ones, a quarter its own 1..N
                examples
    step        as corrector, but a learner is taught the step the last tuning took: its smart's
                attempt from before that tuning -> the label agreed after it, on the next round's
                fresh problems (from round 2 on)
    filter      the learner as a checker: a smart's vote is its completion where its learner keeps
                it (KEEP, or the same completion), and no vote where it rewrites it; not tuned, so
                it judges with what it learned on 1..N

The control, self-labelling, is extend.py itself, run with the same options: both read the smarts
OUT_DIR/kK/smart. The learners are made once, in OUT_DIR/kK/{stupid,learner}. An arm writes
OUT_DIR/ARM/: results.{md,json,png} (extend.py's row per round, with the learners' pairs and what
they make of smart's output just past the frontier), labels.jsonl, and each smart's and learner's
weights after the last round, kK/{smart,learner}/ckpt.pt. Minutes count from the arm's start, the
learners' making included, the look past the frontier not. As in extend.py, no decision reads the
truth past N: only the report does (tested).

    python extend.py --out_dir=out/reach --minutes=30                  # self-labelling: the control
    python -m experiments.reach --out_dir=out/reach --arm=corrector --minutes=30
"""

import copy
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

import corrupt
import extend
import improve
import report
from cli import BadInput, check_writable, opt, parse_config, run_main
from common import (
    complete,
    finetune,
    load_checkpoint,
    pick_device,
    save_checkpoint,
    tokenizer_from,
    write_text,
)
from cot_data import KEEP, ProblemStream, correction_prompt, eval_set
from report import (
    ROUND_HEADER,
    SCREEN,
    markdown_table,
    report_round,
    results_paths,
    round_cells,
    rounds_plot,
    write_results,
)

ARMS = ("corrector", "step", "filter")
PAST = 4  # lengths just past the frontier where the report reads what a learner makes of smart's


@dataclass
class ReachConfig(extend.ExtendConfig):
    out_dir: str = opt("out/reach", "the smarts and learners, and each arm's folder ARM/")
    resume: bool = opt(False, "(extend.py's; refused here: an arm runs whole)")
    arm: str = opt("corrector", "how the learner takes part (see above)", list(ARMS))

    def check(self):
        super().check()
        if self.resume:
            raise BadInput("--resume: an arm runs whole; run it again, or in another --out_dir")


def make_learner(cfg, k, smart, run, data, device):
    """Smart k's learner, made once by corrupt.py and improve.py's recipe from the smart as trained
    (the stupid, pairs of its attempts and smart's solutions on 1..N, the learner tuned on them).
    -> (learner, its 1..N examples)"""
    out = f"{cfg.out_dir}/k{k}"
    if not os.path.exists(f"{out}/stupid/ckpt.pt"):
        corrupt.main([f"--out_dir={out}", f"--device={cfg.device}"])
    if not os.path.exists(f"{out}/learner/ckpt.pt"):
        stupid, _, _ = load_checkpoint(f"{out}/stupid/ckpt.pt", ["stupid"], device, run=run)
        icfg = improve.ImproveConfig(out_dir=out, seed=cfg.smarts * cfg.seed + k + 1)
        torch.manual_seed(icfg.seed)
        rng = random.Random(icfg.seed)
        stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=icfg.seed)
        problems = [stream.sample() for _ in range(icfg.problems)]
        tok = tokenizer_from(data)
        pairs, _ = improve.correction_pairs(smart, stupid, tok, problems, icfg, rng)
        longest = stupid.cfg.max_digit_index - 1
        examples, _ = improve.training_examples(pairs, longest, icfg.replay, rng)
        learner = finetune(stupid, examples, icfg.optim(), tok, device, "learner", icfg.seed)
        save_checkpoint(f"{out}/learner/ckpt.pt", learner, "learner", icfg.steps, data, run)
        write_text(f"{out}/learner/examples.json", json.dumps(examples))
    learner, _, _ = load_checkpoint(f"{out}/learner/ckpt.pt", ["learner"], device, run=run)
    with open(f"{out}/learner/examples.json") as f:
        return learner, [tuple(e) for e in json.load(f)]


class Examples:
    """A learner's own 1..N examples as extend.tune() draws fresh problems: one at random."""

    def __init__(self, examples, seed):
        self.examples = examples
        self.rng = random.Random(seed)

    def sample(self):
        prompt, completion = self.rng.choice(self.examples)
        return SimpleNamespace(prompt=prompt, completion=completion)


def corrections(learner, tok, prompts, attempts, room):
    """The learner handed each attempt: its new completion, or the attempt where it keeps it."""
    longest = learner.cfg.max_digit_index - 1
    max_len = learner.cfg.block_size - room - 1
    handed = [correction_prompt(p, a, longest, max_len) for p, a in zip(prompts, attempts)]
    return [a if c == KEEP else c for a, c in zip(attempts, complete(learner, tok, handed, room))]


def voter(arm, smart, learner, tok, attempts, before=None, earlier=None):
    """Smart k's vote in an arm (prompts, room -> completions), as extend.label_round asks; its
    attempts go to `attempts` (prompt -> completion), and those of `before`, the smart before the
    last tuning (step arm), to `earlier`."""

    def vote(prompts, room):
        mine = complete(smart, tok, prompts, room)
        attempts.update(zip(prompts, mine))
        if before is not None:
            earlier.update(zip(prompts, complete(before, tok, prompts, room)))
        fixed = corrections(learner, tok, prompts, mine, room)
        if arm == "filter":  # a withheld vote is "", which the length filter never keeps
            return [a if c == a else "" for a, c in zip(mine, fixed)]
        return fixed

    return vote


def taught(arm, learner, kept, attempts):
    """A learner's pairs from a round's kept labels: the attempt it is handed -> the label, or KEEP
    where they are the same (none in the filter arm)."""
    if arm == "filter":
        return []
    longest = learner.cfg.max_digit_index - 1
    pairs = []
    for p, label in kept:
        if p.prompt in attempts:
            prompt = correction_prompt(p.prompt, attempts[p.prompt], longest)
            pairs.append((prompt, KEEP if attempts[p.prompt] == label else label))
    return pairs


def past_frontier(smarts, learners, tok, data, frontier, longest):
    """The report: at each of the PAST lengths past the frontier, on SCREEN evaluation problems, how
    many smart gets right at every step, and its learner handed smart's output: [smart, learner]."""
    effect = {}
    for L in range(frontier + 1, min(frontier + PAST, longest) + 1):
        problems = eval_set(data.task, L, data.fmt, SCREEN)
        prompts = [p.prompt for p in problems]
        room = extend.label_shape(data, L)[2]
        truth = [report.reference(p) for p in problems]  # the one place the truth is read
        effect[L] = [0, 0]
        for smart, learner in zip(smarts, learners):
            attempts = {}
            fixed = voter("corrector", smart, learner, tok, attempts)(prompts, room)
            effect[L][0] += sum(attempts[p.prompt] == t for p, t in zip(problems, truth))
            effect[L][1] += sum(c == t for c, t in zip(fixed, truth))
    return effect


def arm_cells(row, N, longest):
    """A round's row as the table shows it: extend.py's cells, then the learners'."""
    effect = " ".join(f"{L}:{a}→{b}" for L, (a, b) in row["effect"].items())
    return round_cells(row, N, longest) + [f"{row['pairs']} ({row['corrections']})", effect]


def write(out, cfg, rows, labels, why, N):
    """The arm's results.{md,json,png} and labels.jsonl as they stand after a round."""
    header = ROUND_HEADER + ["learner pairs (corrections)", "past the frontier: smart → learner"]
    cells = [arm_cells(row, N, cfg.longest) for row in rows]
    text = f"{cfg.arm} arm from N={N}, K={cfg.smarts} smarts: {why or 'running'}\n\n"
    text += markdown_table(header, cells)
    found = dict(config=asdict(cfg), rows=rows)
    write_results(out, text, found, rounds_plot(rows, N), echo=why is not None)
    write_text(f"{out}/labels.jsonl", "".join(json.dumps(x) + "\n" for x in labels))


def run_arm(cfg):
    """extend.py's rounds with the arm's votes and learners. -> a row per round (0: before any)"""
    device = pick_device(cfg.device)
    out = f"{cfg.out_dir}/{cfg.arm}"
    check_writable(f"{out}/labels.jsonl", *results_paths(out))
    t0 = time.time()
    smarts, runs, data = extend.make_smarts(cfg, device)
    tok = tokenizer_from(data)
    N = data.max_digits
    made = [make_learner(cfg, k, smart, runs[k], data, device) for k, smart in enumerate(smarts)]
    learners = [learner for learner, _ in made]
    own = [Examples(examples, 1000 * cfg.seed + k) for k, (_, examples) in enumerate(made)]
    base = ProblemStream(data.task, data.fmt, 1, N, seed=cfg.seed)
    seen = set()
    labels = []  # every kept label: round, prompt, label
    pairs = [[] for _ in smarts]  # every pair each learner was taught
    before = [None for _ in smarts]  # the step arm: the smarts before the last tuning
    rows = []
    aside = 0.0  # seconds of the look past the frontier, a report extend.py does not make
    why = None
    while why is None:
        r = len(rows)
        frontier = rows[-1]["frontier"] if r else N
        agreement = {}
        kept = []
        new_pairs = [[] for _ in smarts]
        if r:
            attempts = [{} for _ in smarts]  # prompt -> smart k's attempt, this round
            earlier = [{} for _ in smarts]  # prompt -> the attempt of smart k before its tuning
            voters = [
                voter(cfg.arm, smart, learners[k], tok, attempts[k], before[k], earlier[k])
                for k, smart in enumerate(smarts)
            ]
            frontier, agreement, kept = extend.label_round(voters, data, frontier, cfg, r, seen)
            new = [(p.prompt, label) for p, label in kept]
            older = [(x["prompt"], x["label"]) for x in labels]
            if cfg.arm == "step":
                before = [copy.deepcopy(smart) for smart in smarts]
            for k, smart in enumerate(smarts if new else []):
                extend.tune(smart, new, older, base, tok, cfg, 100_000 * cfg.seed + 100 * r + k)
            handed = earlier if cfg.arm == "step" else attempts
            for k, learner in enumerate(learners):
                new_pairs[k] = taught(cfg.arm, learner, kept, handed[k])
                seed = 100_000 * cfg.seed + 100 * r + 50 + k
                if new_pairs[k]:
                    extend.tune(learner, new_pairs[k], pairs[k], own[k], tok, cfg, seed)
                pairs[k] += new_pairs[k]
        labels += [dict(round=r, prompt=p.prompt, label=label) for p, label in kept]
        row = dict(round=r, frontier=frontier, agreement=agreement, kept=len(kept))
        row.update(report_round(smarts, tok, data, kept, cfg.longest))  # reads the truth
        row["pairs"] = sum(map(len, new_pairs))
        row["corrections"] = sum(target != KEEP for mine in new_pairs for _, target in mine)
        row["seconds"] = round(time.time() - t0 - aside)
        t1 = time.time()
        row["effect"] = past_frontier(smarts, learners, tok, data, frontier, cfg.longest)
        aside += time.time() - t1
        rows.append(row)
        print("|", " | ".join(map(str, arm_cells(row, N, cfg.longest))), "|", flush=True)
        why = extend.stopping(rows, cfg) if r else None
        write(out, cfg, rows, labels, why, N)
        for k, (smart, learner) in enumerate(zip(smarts, learners)):  # what sample.py reads
            save_checkpoint(f"{out}/k{k}/smart/ckpt.pt", smart, "smart", r, data, runs[k])
            save_checkpoint(f"{out}/k{k}/learner/ckpt.pt", learner, "learner", r, data, runs[k])
    return rows


def main(argv=None):
    run_arm(parse_config(ReachConfig, __doc__, argv))


if __name__ == "__main__":
    run_main(main)
