"""
Build correction pairs and train the learner, and the two controls evaluate.py compares it with.

A correction pair, for a training problem (1..N digits, never an evaluation problem):
    problem + stupid's attempt + '>'   ->   smart's verified-correct solution
The learner starts from stupid's weights and is fine-tuned on the pairs, with the loss on the
solution only. Some pairs hold an attempt that is already right; their target is KEEP ('$' alone):
leaving a right answer alone is part of the job.

    python improve.py                       # writes out/learner, out/expert_iteration, out/learner_no_attempt
    python improve.py --near_miss=0 --replay=0   # only stupid's attempts, and no plain problems mixed in

Controls, with the same problems, steps and optimizer:
    expert_iteration    smart fine-tuned on its own verified-correct samples
    learner_no_attempt  stupid fine-tuned on the same pairs with the attempt removed
"""

import copy
import json
import random
import time
from dataclasses import asdict, dataclass

import torch

from common import (
    DEVICE_HELP,
    BadInput,
    Optim,
    check_writable,
    count_for_share,
    load_checkpoint,
    opt,
    pair_batches,
    parse_config,
    pick_device,
    run_main,
    save_checkpoint,
    score,
    train_loop,
    write_text,
)
from cot_data import (
    KEEP,
    ProblemStream,
    answer_noise,
    check_chain,
    correction_prompt,
    tokenizer_from,
)

CONTROLS = ("expert_iteration", "learner_no_attempt")


@dataclass
class ImproveConfig:
    out_dir: str = opt(
        "out",
        "output root: reads OUT_DIR/smart and OUT_DIR/stupid, writes the learner and controls",
    )
    steps: int = opt(600, "fine-tuning steps of the learner and of each control", lo=1)
    lr: float = opt(1e-3, "peak learning rate", gt=0)
    problems: int = opt(2048, "training problems (1..N digits) to build pairs from", lo=1)
    attempts: int = opt(2, "stupid's sampled attempts per problem", lo=1)
    attempt_temperature: float = opt(0.8, "temperature of those attempts (0 = greedy)", lo=0)
    keep_right: float = opt(
        0.25, "share of pairs whose attempt is already right (target: KEEP)", lo=0, lt=1
    )
    near_miss: float = opt(
        0.3,
        "share of extra pairs whose attempt is smart's solution with 1-2 answer digits off",
        lo=0,
        lt=1,
    )
    replay: float = opt(
        0.2, "share of plain problem -> solution examples mixed in (no attempt)", lo=0, lt=1
    )
    seed: int = opt(3, "random seed", lo=0)
    device: str = opt("auto", DEVICE_HELP)

    def optim(self):
        return Optim(self.steps, self.lr, warmup=50)


def correction_pairs(smart, stupid, tok, problems, cfg, rng):
    """-> (problem, attempt, solution) triples: every wrong attempt of stupid's, near misses, and keep_right
    pairs whose attempt is already right; and a line of counts. A solution is smart's, every step right.
    The right attempts are smart's solutions drawn evenly over all lengths: stupid is rarely right on long
    problems, and a learner that never saw a long right attempt learns to rewrite every long attempt."""
    smart_recs = score(smart, tok, problems, progress_bar=True)
    solutions = {p.prompt: r["completion"] for p, r in zip(problems, smart_recs) if r["verified"]}
    attempts = score(
        stupid,
        tok,
        problems,
        temperature=cfg.attempt_temperature,
        num_samples=cfg.attempts,
        seed=cfg.seed,
        progress_bar=True,
    )
    k = cfg.attempts
    pairs = [
        (problems[j // k], a["completion"], solutions[problems[j // k].prompt])
        for j, a in enumerate(attempts)
        if not a["verified"] and problems[j // k].prompt in solutions
    ]
    solved = [p for p in problems if p.prompt in solutions]
    near = rng.sample(solved, min(len(solved), count_for_share(len(pairs), cfg.near_miss)))
    pairs += [(p, answer_noise(p, rng).completion, solutions[p.prompt]) for p in near]
    pairs += [
        (p, solutions[p.prompt], solutions[p.prompt])
        for p in rng.choices(solved, k=count_for_share(len(pairs), cfg.keep_right))
    ]
    rng.shuffle(pairs)
    return pairs, (
        f"smart solved {sum(r['correct'] for r in smart_recs)}/{len(problems)} problems "
        f"({sum(r['verified'] for r in smart_recs)} with every step right); "
        f"{sum(not a['verified'] for a in attempts)}/{len(attempts)} of stupid's attempts are wrong; "
        f"{len(pairs)} correction pairs"
    )


def training_examples(pairs, max_run=None):
    """(prompt, completion) examples of the learner, and the same problems with the attempt removed.
    A right attempt's target is KEEP: the learner leaves it alone, and the program keeps it.
    max_run: see cot_data.correction_prompt."""

    def target(p, attempt, solution):  # right means every step right, not only the answer
        return KEEP if check_chain(p.task, p.fmt, p.operands, attempt) else solution

    return (
        [(correction_prompt(p.prompt, att, max_run), target(p, att, sol)) for p, att, sol in pairs],
        [(p.prompt, sol) for p, _, sol in pairs],
    )


def finetune(model, examples, optim, tok, device, desc, seed):
    """A fine-tuned copy of `model` (the model given is left as it is) on (prompt, completion) texts.
    Its randomness (batches, abacus offsets) comes from `seed` alone, so a model does not depend on
    what was trained before it: the learner and the controls can be compared and rerun one by one."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    train_loop(model, pair_batches(examples, tok, optim.batch_size, device, seed), optim, desc=desc)
    return model


def controls(smart, stupid, tok, pairs, plain, optim, cfg, device):
    """expert_iteration (smart on its verified-correct solutions and samples of the pairs' problems) and
    learner_no_attempt (stupid on the plain examples), trained as the learner is."""
    ei = score(
        smart, tok, [p for p, _, _ in pairs], temperature=cfg.attempt_temperature, seed=cfg.seed + 1
    )
    own = plain + [(p.prompt, r["completion"]) for (p, _, _), r in zip(pairs, ei) if r["verified"]]
    return {
        "expert_iteration": finetune(smart, own, optim, tok, device, "expert_iteration", cfg.seed),
        "learner_no_attempt": finetune(
            stupid, plain, optim, tok, device, "learner_no_attempt", cfg.seed
        ),
    }


def learner(smart, stupid, tok, data, cfg, device, rng):
    """The correction pairs of cfg.problems fresh training problems, and the learner trained on them
    with plain examples replayed. -> (learner, pairs, plain examples, the learner's examples)"""
    stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=cfg.seed)
    pairs, line = correction_pairs(
        smart, stupid, tok, [stream.sample() for _ in range(cfg.problems)], cfg, rng
    )
    print(line)
    if not pairs:
        raise BadInput(
            "no correction pairs: stupid made no mistakes on the training problems, or smart solved none"
        )
    corrections, plain = training_examples(pairs, stupid.cfg.max_digit_index - 1)
    examples = corrections + [
        rng.choice(plain) for _ in range(count_for_share(len(corrections), cfg.replay))
    ]
    return (
        finetune(stupid, examples, cfg.optim(), tok, device, "learner", cfg.seed),
        pairs,
        plain,
        examples,
    )


def main(argv=None):
    cfg = parse_config(ImproveConfig, __doc__, argv)
    device, out = pick_device(cfg.device), cfg.out_dir
    check_writable(
        f"{out}/learner/pairs.jsonl", *(f"{out}/{m}/ckpt.pt" for m in ("learner",) + CONTROLS)
    )
    torch.manual_seed(cfg.seed)
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    stupid, _, _ = load_checkpoint(f"{out}/stupid/ckpt.pt", ["stupid"], device, run=ckpt["run"])
    tok, t0 = tokenizer_from(data), time.time()
    model, pairs, plain, _ = learner(smart, stupid, tok, data, cfg, device, random.Random(cfg.seed))
    models = {
        "learner": model,
        **controls(smart, stupid, tok, pairs, plain, cfg.optim(), cfg, device),
    }
    for name, model in models.items():  # written only once everything has trained
        save_checkpoint(
            f"{out}/{name}/ckpt.pt",
            model,
            name,
            cfg.steps,
            data,
            ckpt["run"],
            improve_cfg=asdict(cfg),
        )
    rows = [
        {"problem": p.prompt, "operands": p.operands, "attempt": att, "solution": sol}
        for p, att, sol in pairs
    ]
    write_text(
        f"{out}/learner/pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
    )  # one readable pair a line
    print(
        f"wrote {out}/learner/ckpt.pt, the controls and {out}/learner/pairs.jsonl in {time.time() - t0:.0f}s"
    )


if __name__ == "__main__":
    run_main(main)
