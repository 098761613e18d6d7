"""
Build correction pairs and train the learner, plus the two controls evaluate.py compares it with.

A correction pair, for a training problem (1..N digits, never an evaluation problem):
    problem + stupid's attempt + '>'   ->   smart's verified-correct solution
The learner starts from stupid's weights and is fine-tuned on the pairs, with the loss on the
solution only. Some pairs keep an attempt that is already right: leaving a right answer alone
is part of the job.

    python improve.py                       # writes out/learner, out/expert_iteration, out/learner_no_attempt
    python improve.py --near_miss=0 --replay=0 --keep=0   # only stupid's attempts, whole solutions as targets
    python improve.py --self_pairs          # then train again on pairs from the learner's own mistakes

Controls, with the same problems, steps and optimizer:
    expert_iteration    smart fine-tuned on its own verified-correct samples
    learner_no_attempt  stupid fine-tuned on the same pairs with the attempt removed
"""
import json
import os
import random
import time

import torch

from cot_data import KEEP, ProblemStream, answer_noise, check, correction_prompt, eval_exclusions
from model import fail, pick_device, save_checkpoint
from sample import correct, score, tokenizer_from
from train import cli, load_or_fail, pair_batches, train_loop

DEFAULTS = dict(
    out_dir="out", problems=2048,
    attempts=2, attempt_temperature=0.8,   # stupid's sampled attempts per problem
    keep_right=0.25,           # share of pairs whose attempt is already right
    keep=True,                 # for those, the target is KEEP ('$' alone): the attempt stays as it is
    near_miss=0.3,             # share of extra pairs whose attempt is the solution with 1-2 answer digits off
    replay=0.2,                # share of plain problem -> solution examples mixed in (no attempt)
    steps=600, batch_size=64, lr=1e-3, min_lr=1e-4, warmup=50, weight_decay=0.0, grad_clip=1.0,
    eval_every=0,
    self_pairs=False, self_steps=200,   # a second phase on the learner's own wrong outputs
    controls=True, seed=3, device="auto",
)


def build_pairs(problems, solutions, attempts, cfg, rng):
    """-> list of (problem, attempt, solution): every wrong attempt of stupid's, near misses, and
    keep_right pairs whose attempt is already right. The right attempts are smart's own solutions,
    drawn evenly over all lengths: stupid is rarely right on long problems, and a learner that never
    saw a long right attempt learns to rewrite every long attempt."""
    k = len(attempts) // len(problems)
    wrong = [(problems[j // k], a["completion"], solutions[problems[j // k].prompt])
             for j, a in enumerate(attempts) if not a["correct"] and problems[j // k].prompt in solutions]
    solved = [p for p in problems if p.prompt in solutions]
    n_near = min(len(solved), int(len(wrong) * cfg["near_miss"] / max(1e-9, 1 - cfg["near_miss"])))
    pairs = wrong + [(p, answer_noise(p, rng).completion, solutions[p.prompt]) for p in rng.sample(solved, n_near)]
    n_right = int(len(pairs) * cfg["keep_right"] / max(1e-9, 1 - cfg["keep_right"]))
    pairs += [(p, solutions[p.prompt], solutions[p.prompt]) for p in rng.choices(solved, k=n_right)]
    rng.shuffle(pairs)
    return pairs


def write_pairs(path, pairs):
    """One JSON object per line: a person can read it, and an attempt's odd characters stay intact."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for p, att, sol in pairs:
            f.write(json.dumps({"problem": p.prompt, "attempt": att, "solution": sol}) + "\n")


def training_examples(pairs, keep=True, max_run=None):
    """(prompt, completion) examples of the learner, and the same with the attempt removed.
    With keep, a right attempt's target is KEEP: the learner learns to leave it alone, and the
    program keeps it by construction. max_run: see correction_prompt."""
    def target(p, att, sol):
        return KEEP if keep and check(p.task, p.fmt, p.operands, att)[1] else sol
    return ([(correction_prompt(p.prompt, att, max_run), target(p, att, sol)) for p, att, sol in pairs],
            [(p.prompt, sol) for p, _, sol in pairs])


def finetune(model, examples, cfg, tok, device, desc):
    """Fine-tune on (prompt text, completion text) examples with the shared training loop."""
    train_loop(model, pair_batches(examples, tok, cfg["batch_size"], device, cfg["seed"]), cfg, desc=desc)
    return model


def with_replay(examples, plain, cfg, rng):
    n = int(len(examples) * cfg["replay"] / max(1e-9, 1 - cfg["replay"]))
    return examples + [rng.choice(plain) for _ in range(n)] if plain else examples


def main(argv=None):
    cfg = cli(DEFAULTS, __doc__, argv)
    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    device = pick_device(cfg["device"])
    out = cfg["out_dir"]
    smart, ckpt = load_or_fail(f"{out}/smart/ckpt.pt", ["smart"], device)
    stupid, _ = load_or_fail(f"{out}/stupid/ckpt.pt", ["stupid"], device)
    data_cfg, tok = ckpt["data_cfg"], tokenizer_from(ckpt["data_cfg"])
    task, N, t0 = data_cfg["task"], data_cfg["max_digits"], time.time()

    stream = ProblemStream(task, data_cfg["fmt"], 1, N, seed=cfg["seed"], exclude=eval_exclusions(task, N))
    problems = [stream.sample() for _ in range(cfg["problems"])]
    smart_recs = score(smart, tok, problems, progress=True)
    solutions = {p.prompt: r["completion"] for p, r in zip(problems, smart_recs) if r["correct"]}
    attempts = score(stupid, tok, problems, temperature=cfg["attempt_temperature"], num_samples=cfg["attempts"],
                     seed=cfg["seed"], progress=True)
    pairs = build_pairs(problems, solutions, attempts, cfg, rng)
    print(f"smart solved {sum(r['correct'] for r in smart_recs)}/{len(problems)} problems; "
          f"{sum(not a['correct'] for a in attempts)}/{len(attempts)} of stupid's attempts are wrong; "
          f"{len(pairs)} correction pairs")
    if not pairs:
        fail("no correction pairs: stupid made no mistakes on the training problems, or smart solved none")
    write_pairs(f"{out}/learner/pairs.jsonl", pairs)

    corrections, plain = training_examples(pairs, cfg["keep"], stupid.cfg.max_digit_index - 1)
    examples = with_replay(corrections, plain, cfg, rng)
    learner = finetune(stupid, examples, cfg, tok, device, "learner")
    if cfg["self_pairs"]:   # the learner's own wrong outputs become attempts too
        recs = correct(learner, tok, [p for p, _, _ in pairs], [att for _, att, _ in pairs])
        own = [(correction_prompt(p.prompt, r["completion"], learner.cfg.max_digit_index - 1), sol)
               for (p, _, sol), r in zip(pairs, recs) if not r["correct"]]
        print(f"self pairs: the learner was wrong on {len(own)} of its {len(pairs)} training pairs")
        learner = finetune(learner, examples + own, {**cfg, "steps": cfg["self_steps"]}, tok, device, "learner+self")
    save_checkpoint(f"{out}/learner/ckpt.pt", learner, "learner", cfg["steps"], data_cfg, extra={"improve_cfg": cfg})

    if cfg["controls"]:
        steps = cfg["steps"] + (cfg["self_steps"] if cfg["self_pairs"] else 0)   # the same budget
        ccfg = {**cfg, "steps": steps}
        ei = score(smart, tok, [p for p, _, _ in pairs], temperature=cfg["attempt_temperature"], seed=cfg["seed"] + 1)
        # smart's own verified-correct samples: its greedy solutions and its right samples
        own = plain + [(p.prompt, r["completion"]) for (p, _, _), r in zip(pairs, ei) if r["correct"]]
        model = finetune(smart, own, ccfg, tok, device, "expert_iteration")
        save_checkpoint(f"{out}/expert_iteration/ckpt.pt", model, "expert_iteration", steps, data_cfg)
        stupid, _ = load_or_fail(f"{out}/stupid/ckpt.pt", ["stupid"], device)
        model = finetune(stupid, plain, ccfg, tok, device, "learner_no_attempt")
        save_checkpoint(f"{out}/learner_no_attempt/ckpt.pt", model, "learner_no_attempt", steps, data_cfg)
    print(f"wrote {out}/learner/ckpt.pt{' and the controls' if cfg['controls'] else ''} "
          f"and {out}/learner/pairs.jsonl in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
