"""
Knowledge extended slowly: does a self-improvement loop carry smart past N, and does a learner of
corrections carry it further or faster? (After Lee et al. 2025, "Self-Improving Transformers
Overcome Easy-to-Hard and Length Generalization Challenges".)

K smarts, trained as train.py trains smart with K different seeds, label fresh problems past
what they already do; a label is kept when it is as long as the format writes that length and at
least --agree of the K votes are the very same completion. Every smart is then fine-tuned on the
kept labels (half of each batch from the newest round, a quarter from the rounds before it, a
quarter fresh 1..N problems).

The schedule is the models' own. A round labels the length past the frontier F (at first N), then
the next one, up to --ahead lengths, while the share of problems on which the votes agree stays at
--threshold or above; the frontier moves to the last length that cleared it. --ahead=1 is the
one-length schedule; more accelerates it. An arm stops after --patience rounds in a row in which
the frontier did not move, when it reaches --longest, or after --rounds. Four arms, with the
same smarts, problems, steps and filters:

    self        a smart's vote is its own greedy completion
    corrector   a smart's vote is its learner's correction of that completion (each smart has its
                own learner, made by corrupt.py and improve.py's recipe, so the K votes stay
                independent); each learner is then fine-tuned on its round's pairs (its smart's
                attempt -> the kept label; KEEP where they are the same), mixed with its own 1..N
                examples in the same way
    step        as corrector, but each learner is taught the step the round took: after the smarts
                are tuned, they label again the round's problems they did not agree on (and as many
                they did); where they now agree, its smart's attempt from before the round -> the
                label agreed after it (KEEP where they are the same)
    filter      the learner as a checker: a smart's vote is its own completion where its learner
                answers KEEP to it (or writes it again), and no vote where the learner rewrites
                it; the learners are not tuned in the loop, so they judge with what they learned
                on 1..N (with --smarts=1 --agree=1: one smart and its checker)

No answer past N trains, chooses, schedules, filters or stops anything: the truth is read in one
function, judge(), by the report (tests/test_experiments.py replaces it with a liar and gets the
same labels, schedule, stopping round and weights). Reach = the longest length L with >= 90% on
every length 1..L, divided by N; an arm's reach is the mean over its K smarts. Each round measures
every length up to 4 past the best reach and the frontier (more while a smart clears the last),
up to --longest, the longest the models are built to hold: 50 problems a length, and --eval_size
where fewer than 49 of the 50 are right. A kept label is counted right only when every step is.
Each round's row goes to OUT_DIR/ARM-sSEED-rounds.json as it is made, and at the end of an arm
its rows to ARM-sSEED.json, its kept labels to labels-ARM-sSEED.jsonl and each smart's final
weights to sSEED-kK/ARM/ckpt.pt, which sample.py reads.

    python -m experiments.reach                  # N=8, K=3, seed 0: out/reach/results.*
    python -m experiments.reach --seeds=0,1,2 --arms=self,corrector,step
"""

import itertools
import json
import os
import random
import re
import statistics
import time
from dataclasses import asdict, dataclass

import torch

import corrupt
import improve
import train
from cli import BadInput, check_writable, opt, parse_config, run_main
from common import (
    DEVICE_HELP,
    Optim,
    complete,
    encode_prompt,
    finetune,
    finetune_loop,
    load_checkpoint,
    max_new_for,
    pack,
    pick_device,
    save_checkpoint,
    tokenizer_from,
    write_text,
)
from cot_data import (
    KEEP,
    ProblemStream,
    correction_prompt,
    eval_set,
    make_problem,
    random_operands,
    record_of,
)
from evaluate import correct
from experiments.study import reach
from model import ModelConfig
from report import markdown_table, pyplot, results_paths, write_results

ARMS = ("self", "corrector", "step", "filter")


@dataclass
class ReachConfig:
    out_dir: str = opt(
        "out/reach", "where every seed's smarts, stupids, learners and results.{md,json,png} go"
    )
    max_digits: int = opt(8, "N: the smarts are trained on 1..N digits", lo=1)
    smarts: int = opt(3, "K: independently trained smarts (seeds) that vote on every label", lo=1)
    agree: int = opt(
        3, "keep a label when at least this many of the K votes are the same completion", lo=1
    )
    seeds: str = opt(
        "0", "study seeds, comma-separated: seed s trains smarts with seeds K*s+1 .. K*s+K"
    )
    arms: str = opt("self", f"the arms to run, comma-separated: {', '.join(ARMS)}")
    rounds: int = opt(30, "rounds at most", lo=1)
    ahead: int = opt(4, "lengths past the frontier a round may label (1: one at a time)", lo=1)
    threshold: float = opt(0.5, "agreement that lets a length through and moves the frontier", gt=0)
    patience: int = opt(2, "stop after this many rounds in a row without the frontier moving", lo=1)
    problems: int = opt(512, "fresh problems labelled per length", lo=1)
    steps: int = opt(300, "fine-tuning steps per round, of each smart (and each learner)", lo=1)
    lr: float = opt(1e-3, "peak learning rate of those steps", gt=0)
    eval_size: int = opt(200, "test problems at a length that decides reach (reported only)", lo=50)
    longest: int = opt(
        None, "the longest length the models hold (block, digit index); auto: 5N", lo=2
    )
    device: str = opt("auto", DEVICE_HELP)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")

    def check(self):
        if self.agree > self.smarts:
            raise BadInput(f"--agree={self.agree} cannot be more than --smarts={self.smarts}")
        if not all(s.isdigit() for s in self.seeds.split(",")):
            raise BadInput(f"--seeds={self.seeds}: use seeds like 0,1,2")
        if bad := [a for a in self.arms.split(",") if a not in ARMS]:
            raise BadInput(f"--arms: no arm {bad[0]!r}; choose among {', '.join(ARMS)}")
        self.longest = self.longest or 5 * self.max_digits
        room = ModelConfig.max_digit_index - train.TrainConfig.abacus_offset
        if not self.max_digits < self.longest < room:
            raise BadInput(f"--longest={self.longest}: must be above N and below {room}")


def prepare(cfg, seed, k, device, with_learner=True):
    """Smart k of a seed, its stupid and its learner (with the 1..N examples it was trained on),
    each made once in OUT_DIR/sSEED-kK and reused. -> (smart, learner, learner's examples, data);
    without a learner (the self arm needs none) -> (smart, None, None, data)"""
    out, smart_seed = os.path.join(cfg.out_dir, f"s{seed}-k{k}"), cfg.smarts * seed + k + 1
    if not os.path.exists(
        f"{out}/smart/ckpt.pt"
    ):  # room for correction prompts of the longest length
        args = dict(
            out_dir=out,
            max_digits=cfg.max_digits,
            eval_extra=cfg.longest - cfg.max_digits,
            seed=smart_seed,
            eval_every=0,
            device=cfg.device,
        )
        train.train(parse_config(train.TrainConfig, "", [f"--{a}={v}" for a, v in args.items()]))
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    if not with_learner:
        return smart, None, None, data
    if not os.path.exists(f"{out}/stupid/ckpt.pt"):
        corrupt.main([f"--out_dir={out}", f"--device={cfg.device}"])
    tok = tokenizer_from(data)
    if not os.path.exists(f"{out}/learner/ckpt.pt"):
        stupid, _, _ = load_checkpoint(f"{out}/stupid/ckpt.pt", ["stupid"], device, run=ckpt["run"])
        icfg = improve.ImproveConfig(out_dir=out, seed=smart_seed)
        torch.manual_seed(icfg.seed)
        rng = random.Random(icfg.seed)  # improve.py's recipe: pairs, examples, the learner
        stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=icfg.seed)
        problems = [stream.sample() for _ in range(icfg.problems)]
        pairs, _ = improve.correction_pairs(smart, stupid, tok, problems, icfg, rng)
        longest = stupid.cfg.max_digit_index - 1
        examples, _ = improve.training_examples(pairs, longest, icfg.replay, rng)
        learner = finetune(stupid, examples, icfg.optim(), tok, device, "learner", icfg.seed)
        save_checkpoint(f"{out}/learner/ckpt.pt", learner, "learner", icfg.steps, data, ckpt["run"])
        write_text(f"{out}/learner/examples.json", json.dumps(examples))
    learner, _, _ = load_checkpoint(f"{out}/learner/ckpt.pt", ["learner"], device, run=ckpt["run"])
    with open(f"{out}/learner/examples.json") as f:
        return smart, learner, [tuple(e) for e in json.load(f)], data


def vote(problems, completions, agree, min_len, max_number=None):
    """-> [(problem index, label)]: a problem is kept when its label is at least min_len long (the
    length filter), has no number longer than max_number digits (what the models hold), and at
    least `agree` of the K completions (one list per model) are exactly it."""
    kept = []
    for i in range(len(problems)):
        votes = [c[i] for c in completions if len(c[i]) >= min_len and fits(c[i], max_number)]
        best = max(set(votes), key=votes.count, default=None)
        if best is not None and votes.count(best) >= agree:
            kept.append((i, best))
    return kept


def fits(label, max_number):
    """No number in the label longer than max_number digits (None: no limit)."""
    return max_number is None or all(len(n) <= max_number for n in re.findall(r"\d+", label))


def holds(model):
    """The longest number a model can train on: its digit-index table's (None without one)."""
    return model.cfg.max_digit_index - 1 if model.cfg.abacus else None


def tune(model, newest, older, base, tok, cfg, device, seed):
    """Fine-tune `model` in place: each example from the newest round with probability 1/2, from the
    rounds before it 1/4 (else base), and from base 1/4; base(rng) -> a 1..N (prompt, answer)."""
    rng = random.Random(seed)

    def draw():
        u = rng.random()
        return (
            rng.choice(newest)
            if u < 0.5
            else rng.choice(older)
            if u < 0.75 and older
            else base(rng)
        )

    optim = Optim(cfg.steps, cfg.lr, batch_size=64, warmup=20)
    torch.manual_seed(seed)
    finetune_loop(
        model,
        lambda step: pack(
            [
                (encode_prompt(tok, p), tok.encode(c))
                for p, c in (draw() for _ in range(optim.batch_size))
            ],
            device,
        ),
        optim,
        desc="tune",
    )


SCREEN = 50  # test problems a length first; eval_size where fewer than 49 of them are right


def judge(problem, completion):
    """The one place the truth is read: by the report, never by a decision (tested)."""
    return record_of(problem, completion)


def completions(model, tok, problems):
    """Greedy completions, unjudged: what a decision may read."""
    return complete(model, tok, [p.prompt for p in problems], max_new_for(problems))


def accuracy(smart, learner, tok, data, lengths, cfg, effect=None):
    """Accuracy per length of smart (or of its learner handed smart's output): SCREEN problems a
    length, then eval_size where fewer than 49 of the SCREEN were right. Every length is generated
    in one call (batches of mixed lengths keep the CPU busy). With a learner, `effect` collects
    (digits, smart right, learner right) per problem."""

    def right(problems):
        if not problems:
            return []
        out = completions(smart, tok, problems)
        if learner is not None:
            before = [judge(p, c)["correct"] for p, c in zip(problems, out)]
            out = [x["completion"] for x in correct(learner, tok, problems, out)]
        ok = [judge(p, c)["correct"] for p, c in zip(problems, out)]
        if learner is not None and effect is not None:
            effect.extend((p.digits, b, a) for p, b, a in zip(problems, before, ok))
        return ok

    screen = {n: eval_set(data.task, n, data.fmt, SCREEN) for n in lengths}
    ok = dict(zip(screen, split(right(sum(screen.values(), [])), SCREEN)))
    close = [n for n in lengths if sum(ok[n]) < 0.98 * SCREEN]  # could decide reach: look closely
    more = {n: eval_set(data.task, n, data.fmt, cfg.eval_size)[SCREEN:] for n in close}
    for n, extra in zip(close, split(right(sum(more.values(), [])), cfg.eval_size - SCREEN)):
        ok[n] += extra
    return {str(n): sum(ok[n]) / len(ok[n]) for n in lengths}


def split(items, size):
    """items in consecutive chunks of `size`."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def measure(smarts, learners, tok, data, frontier, cfg):
    """Every smart's accuracy (and its learner's on smart's output) on 1..W: W is 4 past the
    frontier and the best reach, and grows while a smart clears it, up to cfg.longest."""
    N, acc = data.max_digits, {"smart": [{} for _ in smarts], "learner_on_smart": []}
    W, done = min(cfg.longest, frontier + 4), 0
    while done < W:
        for k, smart in enumerate(smarts):
            acc["smart"][k].update(accuracy(smart, None, tok, data, range(done + 1, W + 1), cfg))
        done = W
        best = max(round(reach(a, N) * N) for a in acc["smart"])
        W = min(cfg.longest, max(W, best + 4))
    effect = []  # what the learners do with smart's output past N: fixes, breaks
    for smart, learner in zip(smarts, learners):
        lengths = range(1, W + 1)
        acc["learner_on_smart"].append(accuracy(smart, learner, tok, data, lengths, cfg, effect))
    if learners:
        past = [(b, a) for n, b, a in effect if n > N]
        acc["past_N"] = dict(
            problems=len(past),
            fixes=sum(a and not b for b, a in past),
            breaks=sum(b and not a for b, a in past),
        )
    return {name: a for name, a in acc.items() if a}


def label_length(smarts, learners, tok, data, L, cfg, seed, check=False):
    """Labels of fresh L-digit problems: every smart's greedy completion (handed to its learner in
    the corrector arm), kept where the votes agree. With `check` (the filter arm) a learner only
    passes its smart's attempt on or withholds it. -> (problems, attempts, kept [(i, label)],
    the share of the learners' votes that are their smart's attempt)"""
    stream = ProblemStream(data.task, data.fmt, L, L, seed=1000 * seed + L)  # never evaluated
    problems = [stream.sample() for _ in range(cfg.problems)]
    attempts = [completions(smart, tok, problems) for smart in smarts]
    votes = [
        [x["completion"] for x in correct(learner, tok, problems, a)]
        for learner, a in zip(learners, attempts)
    ]
    same = None
    if votes:
        agreeing = sum(v == a for vs, at in zip(votes, attempts) for v, a in zip(vs, at))
        same = agreeing / (len(problems) * len(votes))
    if check:  # a withheld vote is "", which the length filter never keeps
        votes = [[a if v == a else "" for v, a in zip(vs, at)] for vs, at in zip(votes, attempts)]
    chosen = vote(problems, votes or attempts, cfg.agree, shortest(data, L), holds(smarts[0]))
    return problems, attempts, chosen, same


def shortest(data, L):
    """The length filter: a label is at least as long as the format writes an L-digit problem."""
    shape = random.Random(L)
    return min(
        len(make_problem(data.task, random_operands(data.task, L, shape), data.fmt, L).completion)
        for _ in range(20)
    )


def label_round(smarts, learners, tok, data, frontier, cfg, seed, check=False):
    """A round's labels: the lengths past the frontier, one after the other, while the votes agree
    on at least cfg.threshold of the problems (up to cfg.ahead lengths). -> (the new frontier, the
    agreement per length, tried [(problem, its label or None, [each smart's attempt])] for every
    problem labelled, the learners' share of votes that are the attempt)"""
    agreement, tried, same = {}, [], []
    for L in range(frontier + 1, min(frontier + cfg.ahead, cfg.longest) + 1):
        problems, attempts, chosen, share = label_length(
            smarts, learners, tok, data, L, cfg, seed, check
        )
        agreement[L] = len(chosen) / len(problems)
        label = dict(chosen)
        tried += [(p, label.get(i), [a[i] for a in attempts]) for i, p in enumerate(problems)]
        same += [] if share is None else [share]
        if agreement[L] < cfg.threshold:
            break
        frontier = L
    return frontier, agreement, tried, statistics.mean(same) if same else None


def round_step(smarts, tok, data, tried, cfg, rng):
    """The step a round took (the step arm): the round's problems the smarts did not agree on
    before it, and as many they did, labelled again by the tuned smarts. Where they now agree,
    smart k's pair is its attempt from before the round -> the label agreed after it.
    -> [(problem, label after, [each smart's attempt before])]"""
    open_ = [t for t in tried if t[1] is None]
    agreed = [t for t in tried if t[1] is not None]
    again = open_ + rng.sample(agreed, min(len(agreed), len(open_)))
    after = [completions(smart, tok, [p for p, _, _ in again]) for smart in smarts]
    steps = []
    for L in sorted({p.digits for p, _, _ in again}):
        mine = [i for i, (p, _, _) in enumerate(again) if p.digits == L]
        votes = [[c[i] for i in mine] for c in after]
        chosen = vote(mine, votes, cfg.agree, shortest(data, L), holds(smarts[0]))
        steps += [(again[mine[j]][0], label, again[mine[j]][2]) for j, label in chosen]
    return steps


def count_right(labelled):
    """Labels right at every step: read by the report only."""
    return sum(judge(p, label)["verified"] for p, label, _ in labelled)


def base_draw(examples):
    """base(rng) for tune(): one of a learner's own 1..N examples."""
    return lambda rng: rng.choice(examples)


def run_arm(arm, seed, cfg, device):
    """Rounds of labelling and fine-tuning from the seed's K smarts (and learners), until the
    frontier stops moving. -> a row per round (round 0: before any); the kept labels and the final
    smarts are written to OUT_DIR."""
    made = [prepare(cfg, seed, k, device, with_learner=arm != "self") for k in range(cfg.smarts)]
    smarts, data = [m[0] for m in made], made[0][3]
    learners = [m[1] for m in made if m[1] is not None]
    tok, N, loop = tokenizer_from(data), data.max_digits, 0.0
    truth = ProblemStream(data.task, data.fmt, 1, N, seed=seed)

    def fresh(_rng):  # a new 1..N problem beside the labels, from its own stream (not tune's rng)
        p = truth.sample()
        return p.prompt, p.completion

    labels, pairs, rows, log = [], [[] for _ in smarts], [], []
    frontier, still = N, 0
    for r in range(cfg.rounds + 1):
        t0, kept, agreement, same, taught = time.time(), [], {}, None, []
        if r:
            old = frontier
            frontier, agreement, tried, same = label_round(
                smarts, learners, tok, data, frontier, cfg, seed, arm == "filter"
            )
            kept = [t for t in tried if t[1] is not None]
            still = 0 if frontier > old else still + 1
            new = [(p.prompt, label) for p, label, _ in kept]
            log += [
                dict(round=r, digits=p.digits, prompt=p.prompt, label=lab) for p, lab, _ in kept
            ]
            for k in range(len(smarts) if new else 0):
                tune(smarts[k], new, labels, fresh, tok, cfg, device, 100 * seed + 10 * r + k)
            taught = [] if arm == "filter" else kept  # a checker judges with what it knew on 1..N
            if arm == "step" and new:  # what the tuned smarts now agree on, from before the round
                taught = round_step(smarts, tok, data, tried, cfg, random.Random(100 * seed + r))
            for k in range(len(learners) if taught else 0):
                # its own smart's attempt -> the label, beside its 1..N examples
                longest = learners[k].cfg.max_digit_index - 1
                mine = [
                    (correction_prompt(p.prompt, at[k], longest), KEEP if at[k] == lab else lab)
                    for p, lab, at in taught
                ]
                seed_k, base = 100 * seed + 10 * r + k, made[k][2]
                tune(learners[k], mine, pairs[k], base_draw(base), tok, cfg, device, seed_k)
                pairs[k] += mine
            labels += new
        loop += time.time() - t0  # the loop's own time; the report below is not part of it
        # the report: the only reader of the truth
        right = count_right(kept)
        acc = measure(smarts, learners, tok, data, frontier, cfg)
        reaches = [reach(a, N) for a in acc["smart"]]
        row = dict(arm=arm, seed=seed, round=r, frontier=frontier, agreement=agreement)
        row.update(kept=len(kept), right=right, same=same, seconds=round(loop))
        if learners and arm != "filter":  # the learners' pairs, and how many are real corrections
            corrections = sum(a != label for _, label, at in taught for a in at)
            row.update(pairs=len(taught), corrections=corrections, pairs_right=count_right(taught))
        rows.append(dict(row, reach=reaches, accuracy=acc))
        print(
            f"{arm} seed {seed} round {r}: frontier {frontier}, kept {len(kept)} labels ({right} "
            f"right); reach/N {' '.join(f'{x:.2f}' for x in reaches)}; loop {round(loop)}s",
            flush=True,
        )
        so_far = os.path.join(cfg.out_dir, f"{arm}-s{seed}-rounds.json")  # a stopped run keeps them
        write_text(so_far, json.dumps(rows))
        if r and still >= cfg.patience or frontier >= cfg.longest:  # nothing left it may label
            break
    text = "".join(json.dumps(x) + "\n" for x in log)  # every kept label, to re-check
    write_text(os.path.join(cfg.out_dir, f"labels-{arm}-s{seed}.jsonl"), text)
    for k, smart in enumerate(smarts):
        out = os.path.join(cfg.out_dir, f"s{seed}-k{k}")
        _, ckpt, _ = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"])
        save_checkpoint(f"{out}/{arm}/ckpt.pt", smart, "smart", ckpt["step"], data, ckpt["run"])
    return rows


def table(rows, N):
    """A row per arm, seed and round: the schedule, the labels, and each smart's reach."""
    header = ["arm", "seed", "round", "frontier", "agreement per length (%)", "labels kept (right)"]
    header += ["votes = attempt (%)", "learner pairs: corrections (labels right)"]
    header += ["reach/N (each smart)", "learner∘smart reach/N", "past N: fixes/breaks", "loop s"]
    out = []
    for r in rows:
        agree = " ".join(f"{n}:{100 * a:.0f}" for n, a in r["agreement"].items())
        same = "" if r["same"] is None else f"{100 * r['same']:.0f}"
        each = " ".join(f"{x:.2f}" for x in r["reach"])
        learned = r["accuracy"].get("learner_on_smart", [])
        corrected = " ".join(f"{reach(a, N):.2f}" for a in learned)
        out.append([r["arm"], r["seed"], r["round"], r["frontier"], agree])
        pairs = f"{r['pairs']}: {r['corrections']} ({r['pairs_right']})" if "pairs" in r else ""
        past = r["accuracy"].get("past_N")
        effect = f"{past['fixes']}/{past['breaks']} of {past['problems']}" if past else ""
        out[-1] += [f"{r['kept']} ({r['right']})", same, pairs, each, corrected, effect]
        out[-1] += [r["seconds"]]
    return markdown_table(header, out)


def summary(rows, N):
    """Per arm over seeds: the final reach (mean ± half the range), digits gained per round and per
    minute of the loop, and the share of kept labels right at every step."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        first, last = {}, {}
        for r in mine:  # each seed's rounds, in order
            first.setdefault(r["seed"], r)
            last[r["seed"]] = r
        digits = {s: N * statistics.mean(r["reach"]) for s, r in last.items()}
        gained = {s: d - N * statistics.mean(first[s]["reach"]) for s, d in digits.items()}
        per_round = statistics.mean(gained[s] / max(1, last[s]["round"]) for s in last)
        per_minute = statistics.mean(gained[s] / max(1, last[s]["seconds"]) * 60 for s in last)
        reaches = [d / N for d in digits.values()]
        spread = (max(reaches) - min(reaches)) / 2
        kept = sum(r["kept"] for r in mine)
        right = 100 * sum(r["right"] for r in mine) / max(1, kept)
        rounds = " / ".join(str(r["round"]) for r in last.values())
        seconds = " / ".join(str(r["seconds"]) for r in last.values())
        out.append([arm, len(last), f"{statistics.mean(reaches):.2f} ± {spread:.2f}"])
        out[-1] += [f"{statistics.mean(digits.values()):.1f}", rounds, f"{per_round:.2f}"]
        out[-1] += [f"{per_minute:.2f}", kept, f"{right:.2f}", seconds]
    header = ["arm", "seeds", "reach/N at the end", "digits reached (mean)", "rounds (per seed)"]
    header += ["digits gained per round", "per loop minute", "labels kept", "right, every step (%)"]
    return markdown_table(header + ["loop seconds (per seed)"], out)


def plot(rows, N):
    """reach/N per round and per second of the loop, per arm and seed (label accuracy: table)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for arm, color in zip(ARMS, ("C0", "C1", "C2", "C3")):
        seeds = dict.fromkeys(r["seed"] for r in rows if r["arm"] == arm)
        for seed, (marker, line) in zip(
            seeds, itertools.cycle(zip("os^D", ("-", "--", ":", "-.")))
        ):
            mine = [r for r in rows if r["arm"] == arm and r["seed"] == seed]
            reaches = [statistics.mean(r["reach"]) for r in mine]
            for ax, x in zip(axes, ("round", "seconds")):
                ax.plot(
                    [r[x] for r in mine],
                    reaches,
                    marker=marker,
                    linestyle=line,
                    color=color,
                    label=f"{arm}, seed {seed}",
                    alpha=0.8,
                )
    axes[0].set(xlabel="round", ylabel="reach / N (mean of the K smarts)")
    axes[1].set(
        xlabel="seconds of the loop (making smarts and learners, and the report, not counted)",
        ylabel="reach / N",
    )
    for ax in axes:
        ax.axhline(4, color="gray", lw=0.8)  # 4 x N
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(argv=None):
    cfg = parse_config(ReachConfig, __doc__, argv)
    device = pick_device(cfg.device)
    check_writable(*results_paths(cfg.out_dir))
    rows, N = [], cfg.max_digits
    for seed in map(int, cfg.seeds.split(",")):
        # a finished arm is reused (its ARM-sSEED.json), so a stopped study resumes
        for arm in cfg.arms.split(","):
            path = os.path.join(cfg.out_dir, f"{arm}-s{seed}.json")
            if not os.path.exists(path):
                write_text(path, json.dumps(run_arm(arm, seed, cfg, device)))
            with open(path) as f:
                rows += json.load(f)
    text = (
        f"Reach from N={N}: K={cfg.smarts} smarts, a label kept when {cfg.agree} of {cfg.smarts} "
        f"votes agree (and it is long enough); {cfg.problems} problems per length, up to "
        f"{cfg.ahead} lengths a round while agreement >= {cfg.threshold}; {cfg.steps} steps per "
        f"round; stop after {cfg.patience} rounds without the frontier moving\n\n"
        f"{summary(rows, N)}\n\n{table(rows, N)}\n"
    )
    write_results(
        cfg.out_dir,
        text,
        {"config": asdict(cfg), "rows": rows},
        plot(rows, N) if cfg.plot else None,
    )


if __name__ == "__main__":
    run_main(main)
