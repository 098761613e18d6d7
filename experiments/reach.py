"""
Knowledge extended slowly: does a self-improvement loop carry smart past N, and does a learner of
corrections carry it further or faster? (After Lee et al. 2025, "Self-Improving Transformers
Overcome Easy-to-Hard and Length Generalization Challenges".)

K smarts, trained as train.py trains smart with K different seeds, each round label fresh problems
one digit longer than the round before; a label is kept when it is as long as the format writes that
length and at least --agree of the K votes are the very same completion. Every smart is then
fine-tuned on the kept labels (half of each batch from the newest round, a quarter from the rounds
before it, a quarter fresh 1..N problems). Two arms, with the same smarts, problems, steps and
filters:

    self        a smart's vote is its own greedy completion
    corrector   a smart's vote is its learner's correction of that completion (each smart has its
                own learner, made by corrupt.py and improve.py's recipe, so the K votes stay
                independent); each learner is then fine-tuned on its round's pairs (its smart's
                attempt -> the kept label; KEEP where they are the same), mixed with its own 1..N
                examples in the same way

No answer past N trains, chooses or filters anything: past N the truth is read only to report how
many kept labels are right and how accurate each model is. Reach = the longest length L with >= 90%
on every length 1..L, divided by N; an arm's reach is the mean over its K smarts.

    python -m experiments.reach                  # N=8, K=3, seed 0: out/reach/results.*
    python -m experiments.reach --seeds=0,1,2 --arms=self,corrector
"""

import json
import os
import random
import statistics
import time
from dataclasses import asdict, dataclass

import torch

import corrupt
import improve
import train
from common import (
    DEVICE_HELP,
    BadInput,
    Optim,
    check_writable,
    encode_prompt,
    finetune,
    finetune_loop,
    load_checkpoint,
    opt,
    parse_config,
    pick_device,
    run_main,
    save_checkpoint,
    score,
    tokenizer_from,
    write_text,
)
from cot_data import (
    KEEP,
    ProblemStream,
    accuracy_by_digits,
    correction_prompt,
    eval_problems,
    make_problem,
    random_operands,
    record_of,
)
from evaluate import correct, markdown_table, write_results
from experiments.study import pyplot, reach, results_paths
from model import pack

ARMS = ("self", "corrector")


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
    arms: str = opt(",".join(ARMS), "the arms to run, comma-separated: self, corrector")
    rounds: int = opt(8, "rounds at most; round r labels problems of N + r digits", lo=1)
    patience: int = opt(
        2, "stop an arm after this many rounds in a row without a gain in reach", lo=1
    )
    problems: int = opt(1024, "fresh problems labelled per round", lo=1)
    steps: int = opt(300, "fine-tuning steps per round, of each smart (and each learner)", lo=1)
    lr: float = opt(1e-3, "peak learning rate of those steps", gt=0)
    eval_size: int = opt(50, "test problems per length (reported only)", lo=1)
    device: str = opt("auto", DEVICE_HELP)
    plot: bool = opt(True, "draw results.png (needs matplotlib)")

    def check(self):
        if self.agree > self.smarts:
            raise BadInput(f"--agree={self.agree} cannot be more than --smarts={self.smarts}")
        if not all(s.isdigit() for s in self.seeds.split(",")):
            raise BadInput(f"--seeds={self.seeds}: use seeds like 0,1,2")
        if bad := [a for a in self.arms.split(",") if a not in ARMS]:
            raise BadInput(f"--arms: no arm {bad[0]!r}; choose among {', '.join(ARMS)}")

    @property
    def longest(self):  # the lengths measured: a few past the last round's
        return self.max_digits + self.rounds + 4


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


def vote(problems, completions, agree, min_len):
    """-> [(problem index, label)]: a problem is kept when its label is at least min_len long (the
    length filter) and at least `agree` of the K completions (one list per model) are exactly it."""
    kept = []
    for i in range(len(problems)):
        votes = [c[i] for c in completions if len(c[i]) >= min_len]
        best = max(set(votes), key=votes.count, default=None)
        if best is not None and votes.count(best) >= agree:
            kept.append((i, best))
    return kept


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

    optim = Optim(cfg.steps, cfg.lr, warmup=20)
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


def measure(smarts, learners, tok, tests):
    """Accuracy per length of every smart, and of every learner handed its smart's output."""
    acc = {"smart": [], "learner_on_smart": []}
    for k, smart in enumerate(smarts):
        recs = score(smart, tok, tests)
        acc["smart"].append(accuracy_by_digits(recs))
        if learners:
            acc["learner_on_smart"].append(
                accuracy_by_digits(
                    correct(learners[k], tok, tests, [r["completion"] for r in recs])
                )
            )
    return {name: a for name, a in acc.items() if a}


def label_round(smarts, learners, tok, data, L, cfg, seed):
    """One round's labels: every smart's greedy completion of fresh L-digit problems, handed to its
    learner in the corrector arm; kept where the votes agree. -> (problems, attempts, kept [(i,
    label)], how many kept labels are right, the share of the learners' votes that are their smart's
    attempt)"""
    stream = ProblemStream(
        data.task, data.fmt, L, L, seed=1000 * seed + L
    )  # never an evaluation problem
    problems = [stream.sample() for _ in range(cfg.problems)]
    attempts = [[x["completion"] for x in score(smart, tok, problems)] for smart in smarts]
    votes = [
        [x["completion"] for x in correct(learner, tok, problems, a)]
        for learner, a in zip(learners, attempts)
    ]
    same = (
        sum(v == a for vs, at in zip(votes, attempts) for v, a in zip(vs, at))
        / (len(problems) * len(votes))
        if votes
        else None
    )
    shape = random.Random(L)  # the length filter: as long as the format writes an L-digit problem
    min_len = min(
        len(make_problem(data.task, random_operands(data.task, L, shape), data.fmt, L).completion)
        for _ in range(20)
    )
    kept = vote(problems, votes or attempts, cfg.agree, min_len)
    right = sum(
        record_of(problems[i], label)["correct"] for i, label in kept
    )  # read only to report
    return problems, attempts, kept, right, same


def run_arm(arm, seed, cfg, device):
    """Rounds of labelling and fine-tuning from the seed's K smarts (and learners), until reach
    stops growing. -> a row of numbers per round (round 0: before any)"""
    made = [
        prepare(cfg, seed, k, device, with_learner=arm == "corrector") for k in range(cfg.smarts)
    ]
    smarts, data = [m[0] for m in made], made[0][3]
    learners = [m[1] for m in made if m[1] is not None]
    tok, N, t0 = tokenizer_from(data), data.max_digits, time.time()
    tests = eval_problems(data.task, data.fmt, range(1, cfg.longest + 1), cfg.eval_size)
    truth = ProblemStream(data.task, data.fmt, 1, N, seed=seed)

    def fresh(_rng):  # a new 1..N problem beside the labels, from its own stream (not tune's rng)
        p = truth.sample()
        return p.prompt, p.completion

    labels, pairs, rows, best, stale = [], [[] for _ in smarts], [], 0.0, 0
    for r in range(cfg.rounds + 1):
        kept, right, same = [], 0, None
        if r:
            problems, attempts, kept, right, same = label_round(
                smarts, learners, tok, data, N + r, cfg, seed
            )
            new = [(problems[i].prompt, label) for i, label in kept]
            for k in range(len(smarts) if new else 0):
                tune(smarts[k], new, labels, fresh, tok, cfg, device, 100 * seed + 10 * r + k)
                if (
                    learners
                ):  # a learner: its own smart's attempt -> the label, beside its 1..N examples
                    mine = [
                        (
                            correction_prompt(
                                problems[i].prompt,
                                attempts[k][i],
                                learners[k].cfg.max_digit_index - 1,
                            ),
                            KEEP if attempts[k][i] == label else label,
                        )
                        for i, label in kept
                    ]
                    tune(
                        learners[k],
                        mine,
                        pairs[k],
                        lambda rng, base=made[k][2]: rng.choice(base),
                        tok,
                        cfg,
                        device,
                        100 * seed + 10 * r + k,
                    )
                    pairs[k] += mine
            labels += new
        acc = measure(smarts, learners, tok, tests)
        reaches = [reach(a, N) for a in acc["smart"]]
        rows.append(
            dict(
                arm=arm,
                seed=seed,
                round=r,
                digits=N + r,
                kept=len(kept),
                right=right,
                same=same,
                seconds=round(time.time() - t0),
                reach=reaches,
                accuracy=acc,
            )
        )
        print(
            f"{arm} seed {seed} round {r}: kept {len(kept)} labels ({right} right); smart reach/N "
            f"{' '.join(f'{x:.2f}' for x in reaches)}; {rows[-1]['seconds']}s",
            flush=True,
        )
        stale = 0 if statistics.mean(reaches) > best else stale + 1
        best = max(best, statistics.mean(reaches))
        if r and (stale >= cfg.patience or not kept):
            break
    return rows


def mean_acc(accs):
    """The accuracy per length averaged over the K models."""
    return {n: statistics.mean(a[n] for a in accs) for n in accs[0]}


def table(rows, N, longest):
    lengths = range(N + 1, longest + 1)
    header = (
        ["arm", "seed", "round", "labels kept (right)", "votes = attempt (%)", "model"]
        + [f"{n}*" for n in lengths]
        + ["reach/N (each smart)", "seconds"]
    )
    return markdown_table(
        header,
        [
            [
                r["arm"],
                r["seed"],
                r["round"],
                f"{r['kept']} ({r['right']})",
                "" if r["same"] is None else f"{100 * r['same']:.0f}",
                name,
            ]
            + [f"{100 * mean_acc(accs)[str(n)]:.0f}" for n in lengths]
            + [" ".join(f"{x:.2f}" for x in r["reach"]) if name == "smart" else "", r["seconds"]]
            for r in rows
            for name, accs in r["accuracy"].items()
        ],
    )


def summary(rows, N):
    """Per arm over seeds: the final reach (mean ± half the range), rounds, label accuracy, time."""
    out = []
    for arm in dict.fromkeys(r["arm"] for r in rows):
        last = [
            max((r for r in rows if r["arm"] == arm and r["seed"] == s), key=lambda r: r["round"])
            for s in dict.fromkeys(r["seed"] for r in rows if r["arm"] == arm)
        ]
        reaches = [statistics.mean(r["reach"]) for r in last]
        kept = [r for r in rows if r["arm"] == arm and r["kept"]]
        out.append(
            [
                arm,
                len(last),
                f"{statistics.mean(reaches):.2f} ± {(max(reaches) - min(reaches)) / 2:.2f}",
                f"{N * statistics.mean(reaches):.1f}",
                " / ".join(str(r["round"]) for r in last),
                f"{100 * sum(r['right'] for r in kept) / max(1, sum(r['kept'] for r in kept)):.1f}",
                " / ".join(str(r["seconds"]) for r in last),
            ]
        )
    return markdown_table(
        [
            "arm",
            "seeds",
            "reach/N at the end",
            "digits reached (mean)",
            "rounds (per seed)",
            "kept labels right (%)",
            "seconds (per seed)",
        ],
        out,
    )


def plot(rows, N):
    """reach/N per round and per second of the loop, per arm and seed (label accuracy: table)."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for arm, color in zip(ARMS, ("C0", "C1")):
        for seed in dict.fromkeys(r["seed"] for r in rows if r["arm"] == arm):
            mine = [r for r in rows if r["arm"] == arm and r["seed"] == seed]
            reaches = [statistics.mean(r["reach"]) for r in mine]
            for ax, x in zip(axes, ("round", "seconds")):
                ax.plot(
                    [r[x] for r in mine],
                    reaches,
                    marker="o",
                    color=color,
                    label=f"{arm}, seed {seed}",
                    alpha=0.8,
                )
    axes[0].set(
        xlabel="round (labels of N + round digits)", ylabel="reach / N (mean of the K smarts)"
    )
    axes[1].set(
        xlabel="seconds of the loop (making smarts and learners not counted)", ylabel="reach / N"
    )
    for ax in axes:
        ax.axhline(2, color="gray", lw=0.8)
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
        "votes agree "
        f"(and it is long enough); {cfg.problems} problems and {cfg.steps} steps per round; mean "
        "accuracy (%) "
        f"of the K smarts, {cfg.eval_size} problems per length\n\n{summary(rows, N)}\n\n"
        f"{table(rows, N, cfg.longest)}\n"
    )
    write_results(
        cfg.out_dir,
        text,
        {"config": asdict(cfg), "rows": rows},
        plot(rows, N) if cfg.plot else None,
    )


if __name__ == "__main__":
    run_main(main)
