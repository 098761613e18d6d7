"""
5. Knowledge extended: K smarts label problems longer than any they were trained on, keep a label
where all K write the same completion, and are fine-tuned on what they kept, round after round.

A round labels fresh problems of each length past the frontier in turn (--ahead at most) while the
smarts agree on at least --threshold of them, moves the frontier to the last length that did, and
tunes each smart: batches of half the round's labels, a quarter earlier ones, a quarter fresh 1..N
problems. It stops after --patience rounds without the frontier moving, at --longest, after
--rounds, or after the round that passes --minutes. No decision reads the truth past N.

    python extend.py                  # 3 smarts from N=8: out/extend/results.{md,json,png}
    python extend.py --minutes=20     # stop after the round that passes 20 minutes
    python extend.py --rounds=2 && python extend.py --rounds=4 --resume
"""

import os
import random
import re
import time
from dataclasses import asdict, dataclass
from functools import partial

import torch

import train
from cli import BadInput, check_fits, check_writable, opt, parse_config, run_main
from common import (
    DEVICE_HELP,
    Optim,
    atomic_write,
    complete,
    encode_prompt,
    finetune_loop,
    load_checkpoint,
    pack,
    pick_device,
    save_checkpoint,
    tokenizer_from,
)
from cot_data import ProblemStream, fresh_problems, make_problem, random_operands
from report import report_round, results_paths, row_line, write_rounds

BATCH_SIZE = 64  # examples per fine-tuning step
WARMUP = 20  # steps of linear warmup each round
LR = 1e-3  # peak learning rate of a round's fine-tuning
NEWEST = 0.5  # of a tuning batch: the round's labels; OLDER: earlier rounds'; the rest 1..N
OLDER = 0.25
# the options a resumed run must share with the run it resumes
SAME_RUN = ("max_digits", "smarts", "longest", "problems", "ahead", "threshold", "steps", "seed")


@dataclass
class ExtendConfig:
    out_dir: str = opt("out/extend", "where the smarts, labels.jsonl and results.* go")
    smarts: int = opt(3, "K: smarts trained with seeds of their own; a label needs all K", lo=1)
    max_digits: int = opt(8, "N: the smarts are trained on 1..N digits", lo=1, hi=1000)
    longest: int = opt(100, "the longest length labelled (the models hold it)", lo=2, hi=1000)
    abacus_offset: int = opt(None, "training shift of digit indices; auto: longest", lo=0, hi=1000)
    problems: int = opt(256, "fresh problems labelled a length and round", lo=1)
    ahead: int = opt(8, "lengths past the frontier a round may label", lo=1)
    threshold: float = opt(0.5, "agreement a length needs to move the frontier", gt=0, hi=1)
    patience: int = opt(2, "stop after this many rounds without the frontier moving", lo=1)
    steps: int = opt(100, "fine-tuning steps of each smart a round", lo=1)
    rounds: int = opt(100, "stop after this many rounds", lo=1)
    minutes: float = opt(0.0, "stop after the round that passes this many minutes (0: no)", lo=0)
    seed: int = opt(0, "the run's seed: smart k is trained with seed K * seed + k + 1", lo=0)
    resume: bool = opt(False, "go on from the last finished round in OUT_DIR")
    device: str = opt("auto", DEVICE_HELP)

    def check(self):
        if self.abacus_offset is None:  # every index a round labels is one the smarts have seen
            self.abacus_offset = self.longest
        if self.longest <= self.max_digits:
            raise BadInput(f"--longest={self.longest}: must be above N={self.max_digits}")
        check_fits(self.problems * self.ahead * self.smarts, "--problems x --ahead x --smarts")


def smart_args(cfg, k):
    """train.py's options for smart k: the main job's recipe, its own seed, --longest digits."""
    args = [f"--out_dir={cfg.out_dir}/k{k}", f"--seed={cfg.smarts * cfg.seed + k + 1}"]
    args += [f"--max_digits={cfg.max_digits}", f"--longest={cfg.longest}", "--eval_extra=0"]
    args += [f"--abacus_offset={cfg.abacus_offset}"]
    return args + ["--eval_every=0", f"--device={cfg.device}"]


def make_smarts(cfg, device):
    """The K smarts, each trained by train.py once and then reused (a copied one too); a smart of
    other options is refused. -> (smarts, their run ids, DataConfig)"""
    smarts = []
    runs = []
    for k in range(cfg.smarts):
        tcfg = parse_config(train.TrainConfig, "", smart_args(cfg, k))
        path = f"{tcfg.out_dir}/smart/ckpt.pt"
        if not os.path.exists(path):
            train.train(tcfg)
        smart, ckpt, data = load_checkpoint(path, ["smart"], device)
        made = dict(ckpt.get("train_cfg", {}), out_dir=tcfg.out_dir, device=tcfg.device)
        if made != asdict(tcfg):
            raise BadInput(f"{path} is a smart of other options: use another --out_dir")
        smarts.append(smart)
        runs.append(ckpt["run"])
    return smarts, runs, data


def label_shape(data, L):
    """What the format writes for an L-digit problem, read off made-up ones (never a labelled
    problem's answer): (the shortest completion, its widest number, room to generate)."""
    rng = random.Random(L)
    made_up = [random_operands(data.task, L, rng) for _ in range(20)]
    texts = [make_problem(data.task, ops, data.fmt, L).completion for ops in made_up]
    widest = max(len(n) for text in texts for n in re.findall(r"\d+", text))
    return min(map(len, texts)), widest, 2 * max(map(len, texts)) + 8


def label_round(voters, data, frontier, cfg, r, seen):
    """Each length past the frontier in turn while the K voters (prompts, room -> completions) agree
    on cfg.threshold of its problems. -> (new frontier, agreement per length, [(problem, label)])"""
    agreement = {}
    kept = []
    for L in range(frontier + 1, min(frontier + cfg.ahead, cfg.longest) + 1):
        problems = fresh_problems(data.task, data.fmt, L, cfg.problems, f"{cfg.seed}:{r}", seen)
        shortest, widest, room = label_shape(data, L)
        votes = [voter([p.prompt for p in problems], room) for voter in voters]
        for p, v in zip(problems, zip(*votes)):  # v: the K completions of p
            wide = max(map(len, re.findall(r"\d+", v[0])), default=0) > widest
            if len(set(v)) == 1 and len(v[0]) >= shortest and not wide:
                kept.append((p, v[0]))
        agreement[L] = sum(p.digits == L for p, _ in kept) / max(1, len(problems))
        if agreement[L] < cfg.threshold:
            break
        frontier = L
    return frontier, agreement, kept


def tune(model, newest, older, base, tok, cfg, seed):
    """Fine-tune `model` in place on (prompt, completion) texts: an example is one of the round's
    with probability NEWEST, of the earlier rounds' OLDER, else a fresh 1..N problem from `base`
    (never the same twice, so that no length of 1..N is forgotten)."""
    rng = random.Random(seed)
    device = next(model.parameters()).device

    def example():
        u = rng.random()
        if u < NEWEST:
            return rng.choice(newest)
        if u < NEWEST + OLDER and older:
            return rng.choice(older)
        p = base.sample()
        return p.prompt, p.completion

    def batch(step):
        pairs = [example() for _ in range(BATCH_SIZE)]
        return pack([(encode_prompt(tok, p), tok.encode(c)) for p, c in pairs], device)

    torch.manual_seed(seed)
    finetune_loop(model, batch, Optim(cfg.steps, LR, BATCH_SIZE, WARMUP), desc="tune")


def stopping(rows, cfg):
    """Why the run stops after this round, or None: the models' own rules, then the budgets."""
    frontier = rows[-1]["frontier"]
    if frontier >= cfg.longest:
        return f"the frontier reached --longest={cfg.longest}"
    if len(rows) > cfg.patience and rows[-1 - cfg.patience]["frontier"] == frontier:
        return f"the frontier did not move for {cfg.patience} rounds"
    if len(rows) > cfg.rounds:
        return f"--rounds={cfg.rounds}"
    if cfg.minutes and rows[-1]["seconds"] >= 60 * cfg.minutes:
        return f"--minutes={cfg.minutes:g}"
    return None


def start(cfg, path):
    """A new run's state, or the resumed one's, which must be of this run's options."""
    if cfg.resume != os.path.exists(path):
        why = "no run to --resume" if cfg.resume else "a run is there: --resume it or use another"
        raise BadInput(f"{path}: {why}")
    if not cfg.resume:
        return dict(rows=[], labels=[], seen=[], base_rng=None, smarts=[])
    try:
        state = torch.load(path, weights_only=False)
        old = [state["config"][name] for name in SAME_RUN]
    except Exception as e:
        raise BadInput(f"{path} is not a readable extend.py state ({type(e).__name__})") from None
    if old != [getattr(cfg, name) for name in SAME_RUN]:
        raise BadInput(f"{path} is a run of other options: resume it with its own")
    return state


def extend(cfg):
    """Rounds of labelling and fine-tuning; each finished one is saved to resume from."""
    device = pick_device(cfg.device)
    path = f"{cfg.out_dir}/state.pt"
    check_writable(path, f"{cfg.out_dir}/labels.jsonl", *results_paths(cfg.out_dir))
    state = start(cfg, path)
    t0 = time.time() - (state["rows"][-1]["seconds"] if state["rows"] else 0)
    smarts, runs, data = make_smarts(cfg, device)
    tok = tokenizer_from(data)
    voters = [partial(complete, smart, tok) for smart in smarts]  # each smart's greedy completions
    base = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=cfg.seed)
    seen = set(map(tuple, state["seen"]))
    for smart, weights in zip(smarts, state["smarts"]):
        smart.load_state_dict(weights)
    if state["base_rng"]:
        base.rng.setstate(state["base_rng"])
    why = None
    while why is None:
        r = len(state["rows"])  # round 0: the report before any label
        frontier = state["rows"][-1]["frontier"] if r else cfg.max_digits
        agreement = {}
        kept = []
        if r:
            frontier, agreement, kept = label_round(voters, data, frontier, cfg, r, seen)
            new = [(p.prompt, label) for p, label in kept]
            older = [(x["prompt"], x["label"]) for x in state["labels"]]
            for k, smart in enumerate(smarts if new else []):
                tune(smart, new, older, base, tok, cfg, 100_000 * cfg.seed + 100 * r + k)
        state["labels"] += [dict(round=r, prompt=p.prompt, label=label) for p, label in kept]
        row = dict(round=r, frontier=frontier, agreement=agreement, kept=len(kept))
        row.update(report_round(smarts, tok, data, kept, cfg.longest))  # reads the truth
        row["seconds"] = round(time.time() - t0)
        state["rows"].append(row)
        print(row_line(row, cfg.max_digits, cfg.longest), flush=True)
        state.update(config=asdict(cfg), seen=sorted(seen), base_rng=base.rng.getstate())
        state["smarts"] = [smart.state_dict() for smart in smarts]
        atomic_write(path, lambda tmp: torch.save(state, tmp))  # a stopped run resumes here
        why = stopping(state["rows"], cfg) if r else None
        write_rounds(cfg.out_dir, state, asdict(cfg), why)
        for k, smart in enumerate(smarts):  # what sample.py reads
            path_k = f"{cfg.out_dir}/k{k}/extended/ckpt.pt"
            save_checkpoint(path_k, smart, "smart", r, data, runs[k])
    return state


def main(argv=None):
    extend(parse_config(ExtendConfig, __doc__, argv))


if __name__ == "__main__":
    run_main(main)
