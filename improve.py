"""
Build correction pairs and train the learner, and the two controls evaluate.py compares it with.

A correction pair, for a training problem (1..N digits, never an evaluation problem):
    problem + stupid's attempt + '>'   ->   smart's verified-correct solution
The learner starts from stupid's weights and is fine-tuned on the pairs, with the loss on the
solution only. Some pairs hold an attempt that is already right; their target is KEEP ('$' alone):
leaving a right answer alone is part of the job.

    python improve.py           # writes out/learner, out/expert_iteration, out/learner_no_attempt
    python improve.py --near_miss=0 --replay=0   # stupid's attempts only, no plain problems

Controls, with the same problems, steps and optimizer:
    expert_iteration    smart fine-tuned on its own verified-correct samples
    learner_no_attempt  stupid fine-tuned on the same pairs with the attempt removed
"""

import json
import random
import time
from dataclasses import asdict, dataclass

import torch

from cli import BadInput, check_fits, check_writable, opt, parse_config, run_main
from common import (
    CONTROLS,
    DEVICE_HELP,
    GENERATE_BATCH,
    Optim,
    count_for_share,
    finetune,
    load_checkpoint,
    pick_device,
    save_checkpoint,
    score,
    tokenizer_from,
    write_text,
)
from cot_data import KEEP, ProblemStream, answer_noise, check_chain, correction_prompt

KEEP_RIGHT = 0.25  # share of pairs whose attempt is already right: the target is KEEP
WARMUP = 50  # steps of linear warmup, for the learner and each control
BATCH_SIZE = 64  # examples per step


@dataclass
class ImproveConfig:
    out_dir: str = opt("out", "output root: reads smart and stupid, writes the learner, controls")
    steps: int = opt(600, "fine-tuning steps of the learner and of each control", lo=1)
    lr: float = opt(1e-3, "peak learning rate", gt=0)
    problems: int = opt(2048, "training problems (1..N digits) to build pairs from", lo=1)
    attempts: int = opt(2, "stupid's sampled attempts per problem", lo=1, hi=GENERATE_BATCH)
    attempt_temperature: float = opt(0.8, "temperature of those attempts (0: greedy)", lo=0)
    near_miss: float = opt(
        0.3, "share of extra pairs: smart's solution with 1-2 answer digits off", lo=0, lt=1
    )
    replay: float = opt(0.2, "share of plain problem -> solution examples mixed in", lo=0, lt=1)
    seed: int = opt(3, "random seed", lo=0)
    device: str = opt("auto", DEVICE_HELP)

    def check(self):
        check_fits(self.problems * (self.attempts + 1), "--problems x --attempts")

    def optim(self):
        return Optim(self.steps, self.lr, BATCH_SIZE, WARMUP)


def correction_pairs(smart, stupid, tok, problems, cfg, rng):
    """-> [(problem, attempt, solution)] and a line of counts. The pairs: every wrong attempt of
    stupid's, near misses, and KEEP_RIGHT pairs whose attempt is already right; a solution is
    smart's, every step right. The right attempts are smart's solutions drawn evenly over all
    lengths: stupid is rarely right on long problems, and a learner that never saw a long right
    attempt learns to rewrite every long attempt."""
    smart_recs = score(smart, tok, problems, progress_bar=True)
    solutions = {p.prompt: r["completion"] for p, r in zip(problems, smart_recs) if r["verified"]}
    k = cfg.attempts
    temperature = cfg.attempt_temperature
    attempts = score(
        stupid,
        tok,
        problems,
        temperature=temperature,
        num_samples=k,
        seed=cfg.seed,
        progress_bar=True,
    )
    pairs = [
        (problems[j // k], a["completion"], solutions[problems[j // k].prompt])
        for j, a in enumerate(attempts)
        if not a["verified"] and problems[j // k].prompt in solutions
    ]
    solved = [p for p in problems if p.prompt in solutions]
    near = rng.sample(solved, min(len(solved), count_for_share(len(pairs), cfg.near_miss)))
    pairs += [(p, answer_noise(p, rng).completion, solutions[p.prompt]) for p in near]
    right = rng.choices(solved, k=count_for_share(len(pairs), KEEP_RIGHT))
    pairs += [(p, solutions[p.prompt], solutions[p.prompt]) for p in right]
    rng.shuffle(pairs)
    wrong = sum(not a["verified"] for a in attempts)
    return pairs, (
        f"smart solved {sum(r['correct'] for r in smart_recs)}/{len(problems)} problems "
        f"({sum(r['verified'] for r in smart_recs)} with every step right); "
        f"{wrong}/{len(attempts)} of stupid's attempts are wrong; {len(pairs)} correction pairs"
    )


def training_examples(pairs, longest_number=None, replay=0.0, rng=None):
    """-> (the learner's examples, plain examples): (prompt, completion) texts. The learner reads
    problem + attempt + '>' (longest_number: cot_data.correction_prompt) and writes the solution, or
    KEEP where the attempt is right; plain examples are the same problems without the attempt, and
    `replay` of the learner's examples are plain ones drawn from them."""

    def target(p, attempt, solution):  # right means every step right, not only the answer
        return KEEP if check_chain(p.task, p.fmt, p.operands, attempt) else solution

    prompts = [correction_prompt(p.prompt, a, longest_number) for p, a, _ in pairs]
    corrections = [(prompt, target(*pair)) for prompt, pair in zip(prompts, pairs)]
    plain = [(p.prompt, s) for p, _, s in pairs]
    replayed = [rng.choice(plain) for _ in range(count_for_share(len(corrections), replay))]
    return corrections + replayed, plain


def controls(smart, stupid, tok, pairs, plain, optim, cfg, device):
    """expert_iteration (smart on its verified-correct solutions and samples of the pairs' problems)
    and learner_no_attempt (stupid on the plain examples), trained as the learner is."""
    problems = [p for p, _, _ in pairs]
    ei = score(smart, tok, problems, temperature=cfg.attempt_temperature, seed=cfg.seed + 1)
    own = plain + [(p.prompt, r["completion"]) for p, r in zip(problems, ei) if r["verified"]]
    return {
        "expert_iteration": finetune(smart, own, optim, tok, device, "expert_iteration", cfg.seed),
        "learner_no_attempt": finetune(stupid, plain, optim, tok, device, CONTROLS[1], cfg.seed),
    }


def main(argv=None):
    cfg = parse_config(ImproveConfig, __doc__, argv)
    device = pick_device(cfg.device)
    out = cfg.out_dir
    paths = [f"{out}/{m}/ckpt.pt" for m in ("learner", *CONTROLS)]
    check_writable(f"{out}/learner/pairs.jsonl", *paths)
    torch.manual_seed(cfg.seed)
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    stupid, _, _ = load_checkpoint(f"{out}/stupid/ckpt.pt", ["stupid"], device, run=ckpt["run"])
    tok = tokenizer_from(data)
    rng = random.Random(cfg.seed)
    t0 = time.time()
    stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=cfg.seed)
    problems = [stream.sample() for _ in range(cfg.problems)]
    pairs, line = correction_pairs(smart, stupid, tok, problems, cfg, rng)
    print(line)
    if not pairs:
        raise BadInput("no correction pairs: stupid made no mistakes, or smart solved nothing")
    longest_number = stupid.cfg.max_digit_index - 1  # the longest number the learner can read
    examples, plain = training_examples(pairs, longest_number, cfg.replay, rng)
    learner = finetune(stupid, examples, cfg.optim(), tok, device, "learner", cfg.seed)
    models = {
        "learner": learner,
        **controls(smart, stupid, tok, pairs, plain, cfg.optim(), cfg, device),
    }
    for name, model in models.items():  # written only once everything has trained
        path = f"{out}/{name}/ckpt.pt"
        save_checkpoint(
            path, model, name, cfg.steps, data, ckpt["run"], dict(improve_cfg=asdict(cfg))
        )
    rows = [dict(problem=p.prompt, operands=p.operands, attempt=a, solution=s) for p, a, s in pairs]
    text = "".join(json.dumps(r) + "\n" for r in rows)  # one readable pair a line
    write_text(f"{out}/learner/pairs.jsonl", text)
    print(f"wrote {out}/learner/ckpt.pt, the controls and pairs.jsonl in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    run_main(main)
