"""
The learners of the arms study (experiments/arms.py): improve.py's recipe with one or more changes.

    target        what the learner writes: the whole solution (improve.py's learner), only the
                  answer (the program keeps the attempt's chain of thought), or digits (the answer
                  written over the attempt's digit by digit, its length kept): experiments/study.py
    learner_from  the weights it starts from: stupid's (improve.py) or smart's
    lr, near_miss, replay   improve.py's options
    rounds        on-policy rounds after the first fine-tune (expert iteration on the learner): it
                  corrects fresh attempts at 1..N (smart's and stupid's samples, its own outputs)
                  and is fine-tuned on the corrections the checker verifies; each round's start is
                  written as learner_roundR
    freeze        weights of its start that stay as they are: the token and digit-position tables
                  (embeddings), or every weight (all: only the adapter trains)
    adapter       the rank of a low-rank adapter (LoRA) on every linear layer, merged after training
    short_stupid  stupid is not smart corrupted but a new model of smart's shape, trained as smart
                  was on 1..N-3 digits: its mistakes at the top lengths are length mistakes, as
                  smart's are past N

The controls get the learner's steps (rounds included) and smart's solutions of the rounds'
problems.
"""

import copy
import random
from dataclasses import dataclass, replace

import torch
import torch.nn.utils.parametrize as parametrize

from cli import BadInput
from common import (
    Optim,
    count_for_share,
    encode_prompt,
    finetune,
    finetune_loop,
    load_checkpoint,
    pack,
    pair_batches,
    pick_device,
    save_checkpoint,
    score,
    tokenizer_from,
)
from cot_data import KEEP, ProblemStream, check_chain, correction_prompt
from experiments.study import correct_as, written
from improve import ImproveConfig, controls, correction_pairs, training_examples
from model import GPT

ROUND_PROBLEMS, ROUND_SAMPLES, ROUND_TEMPERATURE, ROUND_STEPS = (
    512,
    4,
    1.0,
    200,
)  # per on-policy round
FIX_WEIGHT = 3  # a verified correction of a wrong attempt counts this many times (the others once)
SHORT_BY = 3  # the short stupid is trained on 1..N-3 digits
# the parameter-name prefixes that freeze keeps as they are ("" starts every name)
FROZEN = {
    "none": (),
    "embeddings": ("tok_embeddings", "digit_embeddings", "pos_embeddings"),
    "all": ("",),
}


@dataclass(frozen=True)
class Arm:
    target: str = "solution"
    learner_from: str = "stupid"
    lr: float = 1e-3
    near_miss: float = 0.3
    replay: float = 0.2
    rounds: int = 0
    freeze: str = "none"
    adapter: int = 0
    short_stupid: bool = False


class LowRank(torch.nn.Module):
    """A weight W read as W + B A with B A of rank r and W frozen: a low-rank adapter (LoRA, Hu et
    al. 2021). B starts at zero, so the adapted model starts as the model it adapts."""

    def __init__(self, weight, rank):
        super().__init__()
        self.A = torch.nn.Parameter(
            torch.randn(rank, weight.shape[1], device=weight.device) / weight.shape[1] ** 0.5
        )
        self.B = torch.nn.Parameter(torch.zeros(weight.shape[0], rank, device=weight.device))

    def forward(self, weight):
        return weight + self.B @ self.A


def finetune_arm(model, examples, optim, tok, device, desc, seed, freeze="none", adapter=0):
    """improve.finetune (a fine-tuned copy), with the weights of FROZEN[freeze] kept as they are and
    a LoRA adapter of rank `adapter` on every linear layer, trained and then merged: a plain model
    again."""
    if freeze == "none" and not adapter:
        return finetune(model, examples, optim, tok, device, desc, seed)
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(f) for f in FROZEN[freeze]))
    tied = model.output if model.cfg.tie_embeddings else None  # its weight is the embedding table's
    layers = (
        [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not tied]
        if adapter
        else []
    )
    for m in layers:
        parametrize.register_parametrization(m, "weight", LowRank(m.weight, adapter))
    finetune_loop(
        model, pair_batches(examples, tok, optim.batch_size, device, seed), optim, desc=desc
    )
    for m in layers:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def onpolicy_round(learner, smart, stupid, tok, problems, cfg, target, seed):
    """Expert iteration on the learner, one round. Each problem gets three attempts: smart's sample,
    stupid's, and the learner's own greedy correction of stupid's. The learner samples ROUND_SAMPLES
    corrections of each; those whose every step is right become its examples, a wrong attempt made
    right FIX_WEIGHT times. -> (examples, a line of counts)"""
    stupids = [
        r["completion"]
        for r in score(stupid, tok, problems, temperature=cfg.attempt_temperature, seed=seed)
    ]
    attempts = (
        [
            r["completion"]
            for r in score(smart, tok, problems, temperature=ROUND_TEMPERATURE, seed=seed)
        ]
        + stupids
        + [r["completion"] for r in correct_as(learner, tok, problems, stupids, target)]
    )
    probs, k = problems * 3, ROUND_SAMPLES
    right = [check_chain(p.task, p.fmt, p.operands, a) for p, a in zip(probs, attempts)]
    recs = correct_as(
        learner, tok, probs * k, attempts * k, target, temperature=ROUND_TEMPERATURE, seed=seed
    )
    examples, fixed, kept = [], 0, 0
    for j, r in enumerate(recs):
        i = j % len(probs)
        if r["verified"]:
            out = KEEP if r.get("kept") else written(r["completion"], target)
            examples += [
                (
                    correction_prompt(
                        probs[i].prompt, attempts[i], learner.cfg.max_digit_index - 1
                    ),
                    out,
                )
            ] * (1 if right[i] else FIX_WEIGHT)
            fixed, kept = fixed + (not right[i]), kept + right[i]
    wrong = len(right) - sum(right)
    return examples, (
        f"{wrong}/{len(right)} attempts wrong; {fixed}/{wrong * k} sampled corrections of them "
        "right, "
        f"{kept}/{(len(right) - wrong) * k} of the right ones left right; {len(examples)} examples"
    )


def short_stupid(out, short_by=SHORT_BY, seed=2):
    """OUT/stupid: a model of smart's shape trained from scratch as smart was (its steps, learning
    rate and batch), on 1..N-short_by digits, with corrupt.py's seed. -> a line saying so"""
    device = pick_device("auto")
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    if short_by >= data.max_digits:
        raise BadInput(
            f"a stupid short by {short_by} digits has none of 1..{data.max_digits} left to train on"
        )
    tok, t = tokenizer_from(data), ckpt["train_cfg"]
    optim = Optim(t["steps"], t["lr"], t["batch_size"], warmup=100, weight_decay=0.1)
    torch.manual_seed(seed)
    model = GPT(smart.cfg).to(device)
    stream = ProblemStream(data.task, data.fmt, 1, data.max_digits - short_by, seed=seed)
    finetune_loop(
        model,
        lambda step: pack(
            [
                (encode_prompt(tok, p.prompt), tok.encode(p.completion))
                for p in (stream.sample() for _ in range(optim.batch_size))
            ],
            device,
        ),
        optim,
        desc="stupid (short)",
    )
    save_checkpoint(
        f"{out}/stupid/ckpt.pt",
        model,
        "stupid",
        optim.steps,
        data,
        ckpt["run"],
        dict(short_by=short_by),
    )
    shorter = data.max_digits - short_by
    return f"stupid: a new model of smart's shape, trained as smart was on 1..{shorter} digits\n"


def improve_arm(out, arm, seed, **options):
    """improve.py's pairs, learner and controls in OUT, with the arm's changes (and improve.py's
    options); each round's start is written as OUT/learner_roundR. -> what it printed"""
    cfg = ImproveConfig(
        out_dir=out, seed=seed, lr=arm.lr, near_miss=arm.near_miss, replay=arm.replay, **options
    )
    device = pick_device("auto")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    stupid, _, _ = load_checkpoint(f"{out}/stupid/ckpt.pt", ["stupid"], device, run=ckpt["run"])
    tok = tokenizer_from(data)
    stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=seed)
    pairs, line = correction_pairs(
        smart, stupid, tok, [stream.sample() for _ in range(cfg.problems)], cfg, rng
    )
    lines = [line]
    corrections, plain = training_examples(pairs, stupid.cfg.max_digit_index - 1)
    corrections = [
        (prompt, t if t == KEEP else written(t, arm.target)) for prompt, t in corrections
    ]
    examples = corrections + [
        rng.choice(plain) for _ in range(count_for_share(len(corrections), cfg.replay))
    ]
    optim, how = cfg.optim(), dict(freeze=arm.freeze, adapter=arm.adapter)
    start = smart if arm.learner_from == "smart" else stupid
    learner = finetune_arm(start, examples, optim, tok, device, "learner", seed, **how)
    onpolicy, starts = [], {}
    for r in range(
        arm.rounds
    ):  # its verified corrections of all rounds so far; no answer past N is used
        starts[f"learner_round{r}"] = learner, cfg.steps + r * ROUND_STEPS
        fresh = [stream.sample() for _ in range(ROUND_PROBLEMS)]
        new, line = onpolicy_round(
            learner, smart, stupid, tok, fresh, cfg, arm.target, seed + 1 + r
        )
        onpolicy += new
        plain += [
            (p.prompt, x["completion"])
            for p, x in zip(fresh, score(smart, tok, fresh))
            if x["verified"]
        ]
        lines.append(f"round {r + 1}: {line}")
        if onpolicy:
            learner = finetune_arm(
                learner,
                onpolicy,
                replace(optim, steps=ROUND_STEPS),
                tok,
                device,
                f"learner round {r + 1}",
                seed + 1 + r,
                **how,
            )
    steps = cfg.steps + arm.rounds * ROUND_STEPS
    models = {"learner": (learner, steps), **starts}
    for name, model in controls(
        smart, stupid, tok, pairs, plain, replace(optim, steps=steps), cfg, device
    ).items():
        models[name] = model, steps
    for name, (model, step) in models.items():
        save_checkpoint(
            f"{out}/{name}/ckpt.pt",
            model,
            "learner" if name.startswith("learner_round") else name,
            step,
            data,
            ckpt["run"],
            dict(target=arm.target),
        )
    print("\n".join(lines))
    return "\n".join(lines) + "\n"
