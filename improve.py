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
    python improve.py --target=digits --rounds=3   # an editing learner, then 3 rounds of expert iteration on it
    python improve.py --learner_from=smart --freeze=all --adapter=8   # a LoRA adapter on a frozen smart

Controls, with the same problems, steps and optimizer:
    expert_iteration    smart fine-tuned on its own verified-correct samples
    learner_no_attempt  stupid fine-tuned on the same pairs with the attempt removed
"""
import glob
import json
import os
import random
import time
from dataclasses import asdict, dataclass, replace

import torch

from common import (BadInput, Optim, check_writable, correct, count_for_share, finetune,
                    load_checkpoint, opt, parse_config, pick_device, run_main, save_checkpoint, score,
                    tokenizer_from, write_text)
from cot_data import KEEP, ProblemStream, answer_noise, answer_of, check_chain, correction_prompt, eval_exclusions

MODELS = ("learner", "expert_iteration", "learner_no_attempt")


@dataclass
class ImproveConfig(Optim):
    steps: int = 600
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 50
    weight_decay: float = 0.0
    out_dir: str = opt("out", "output root: reads OUT_DIR/smart and OUT_DIR/stupid, writes the learner and controls")
    problems: int = opt(2048, "training problems (1..N digits) to build pairs from", lo=1)
    attempts: int = opt(2, "stupid's sampled attempts per problem", lo=1)
    attempt_temperature: float = opt(0.8, "temperature of those attempts (0 = greedy)", lo=0)
    keep_right: float = opt(0.25, "share of pairs whose attempt is already right", lo=0, lt=1)
    keep: bool = opt(True, "the target of a right attempt is KEEP ('$' alone): the attempt stays as it is")
    target: str = opt("solution", "what the learner writes: the whole solution; only the answer ('#...$', the "
                      "program keeps the attempt's chain of thought); or digits (the same, written over the "
                      "attempt's answer digit by digit, its length kept)", choices=("solution", "answer", "digits"))
    near_miss: float = opt(0.3, "share of extra pairs whose attempt is smart's solution with 1-2 answer digits off",
                           lo=0, lt=1)
    replay: float = opt(0.2, "share of plain problem -> solution examples mixed in (no attempt)", lo=0, lt=1)
    learner_from: str = opt("stupid", "the weights the learner starts from", choices=("stupid", "smart"))
    self_pairs: bool = opt(False, "then train again, adding pairs made of the learner's own wrong outputs")
    self_steps: int = opt(200, "steps of that second phase", lo=1)
    rounds: int = opt(0, "on-policy rounds after the first fine-tune (expert iteration on the learner): it corrects "
                      "fresh attempts at 1..N problems (smart's and stupid's samples, its own outputs), and is "
                      "fine-tuned on the corrections the checker verifies", lo=0)
    round_problems: int = opt(512, "fresh training problems per round (each gets three attempts)", lo=1)
    round_samples: int = opt(4, "the learner's sampled corrections per attempt in a round", lo=1)
    round_temperature: float = opt(1.0, "temperature of smart's attempts and of the learner's corrections in a round",
                                   gt=0)
    round_steps: int = opt(200, "fine-tuning steps per round", lo=1)
    fix_weight: int = opt(3, "a verified correction of a wrong attempt counts this many times (the others once)",
                          lo=1)
    freeze: str = opt("none", "weights of the learner's start that stay as they are: the token and digit-position "
                      "tables (embeddings), or every weight (all: only --adapter trains)",
                      choices=("none", "embeddings", "all"))
    adapter: int = opt(0, "rank of a low-rank adapter (LoRA) on every linear layer of the learner, merged into the "
                       "weights after training; 0 = none", lo=0)
    controls: bool = opt(True, "also train expert_iteration and learner_no_attempt with the same budget")
    seed: int = opt(3, "random seed", lo=0)
    device: str = opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")

    def check(self):
        self.check_optim()
        if self.freeze == "all" and not self.adapter:
            raise BadInput("--freeze=all leaves nothing to train: give --adapter a rank")


def build_pairs(problems, solutions, attempts, cfg, rng):
    """-> list of (problem, attempt, solution): every wrong attempt of stupid's, near misses, and
    keep_right pairs whose attempt is already right. The right attempts are smart's own solutions,
    drawn evenly over all lengths: stupid is rarely right on long problems, and a learner that never
    saw a long right attempt learns to rewrite every long attempt."""
    k = len(attempts) // len(problems)
    wrong = [(problems[j // k], a["completion"], solutions[problems[j // k].prompt])
             for j, a in enumerate(attempts) if not a["verified"] and problems[j // k].prompt in solutions]
    solved = [p for p in problems if p.prompt in solutions]
    n_near = min(len(solved), count_for_share(len(wrong), cfg.near_miss))
    pairs = wrong + [(p, answer_noise(p, rng).completion, solutions[p.prompt]) for p in rng.sample(solved, n_near)]
    pairs += [(p, solutions[p.prompt], solutions[p.prompt])
              for p in rng.choices(solved, k=count_for_share(len(pairs), cfg.keep_right))]
    rng.shuffle(pairs)
    return pairs


def pairs_jsonl(pairs):
    """One JSON object per line: a person can read it, and an attempt's odd characters stay intact."""
    return "".join(json.dumps({"problem": p.prompt, "operands": p.operands, "attempt": att, "solution": sol}) + "\n"
                   for p, att, sol in pairs)


def written(solution, target):
    """What the learner writes for a solution: all of it, or (answer, digits) only its answer."""
    return solution if target == "solution" else answer_of(solution)


def training_examples(pairs, keep=True, max_run=None, target="solution"):
    """(prompt, completion) examples of the learner, and the same with the attempt removed.
    With keep, a right attempt's target is KEEP: the learner learns to leave it alone, and the
    program keeps it by construction. target="answer": the learner writes only the solution's answer.
    max_run: see correction_prompt."""
    def learner_target(p, att, sol):
        if keep and check_chain(p.task, p.fmt, p.operands, att):   # every step right, not only the answer
            return KEEP
        return written(sol, target)
    return ([(correction_prompt(p.prompt, att, max_run), learner_target(p, att, sol)) for p, att, sol in pairs],
            [(p.prompt, sol) for p, _, sol in pairs])


def with_replay(examples, plain, cfg, rng):
    return examples + [rng.choice(plain) for _ in range(count_for_share(len(examples), cfg.replay))] if plain else examples


def onpolicy_round(learner, smart, stupid, tok, problems, cfg, seed):
    """Expert iteration on the learner, one round. Each problem gets three attempts: smart's sample at
    round_temperature, stupid's at attempt_temperature, and the learner's own greedy correction of
    stupid's. The learner samples round_samples corrections of each; those whose every step is right
    become its examples, a wrong attempt made right fix_weight times. -> (examples, a line of stats)"""
    stupids = [r["completion"] for r in score(stupid, tok, problems, temperature=cfg.attempt_temperature, seed=seed)]
    attempts = ([r["completion"] for r in score(smart, tok, problems, temperature=cfg.round_temperature, seed=seed)]
                + stupids + [r["completion"] for r in correct(learner, tok, problems, stupids, cfg.target)])
    probs, k = problems * 3, cfg.round_samples
    right = [check_chain(p.task, p.fmt, p.operands, a) for p, a in zip(probs, attempts)]
    recs = correct(learner, tok, probs * k, attempts * k, cfg.target, temperature=cfg.round_temperature, seed=seed)
    examples, fixed, kept = [], 0, 0
    for j, r in enumerate(recs):
        i = j % len(probs)
        if r["verified"]:
            out = KEEP if r.get("kept") else written(r["completion"], cfg.target)
            examples += [(correction_prompt(probs[i].prompt, attempts[i], learner.cfg.max_digit_index - 1), out)] * (
                1 if right[i] else cfg.fix_weight)
            fixed, kept = fixed + (not right[i]), kept + right[i]
    wrong = len(right) - sum(right)
    return examples, (f"{wrong}/{len(right)} attempts wrong; {fixed}/{wrong * k} sampled corrections of them right, "
                      f"{kept}/{(len(right) - wrong) * k} of the right ones left right; {len(examples)} examples")


def main(argv=None):
    cfg = parse_config(ImproveConfig, __doc__, argv)
    device, out = pick_device(cfg.device), cfg.out_dir
    check_writable(f"{out}/learner/pairs.jsonl", *(f"{out}/{m}/ckpt.pt" for m in MODELS),
                   *(f"{out}/learner_round{r}/ckpt.pt" for r in range(cfg.rounds)))
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    smart, ckpt, data = load_checkpoint(f"{out}/smart/ckpt.pt", ["smart"], device)
    run = ckpt["run"]
    stupid, _, _ = load_checkpoint(f"{out}/stupid/ckpt.pt", ["stupid"], device, run=run)
    tok, t0 = tokenizer_from(data), time.time()

    stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=cfg.seed,
                           exclude=eval_exclusions(data.task, data.max_digits))
    problems = [stream.sample() for _ in range(cfg.problems)]
    smart_recs = score(smart, tok, problems, progress_bar=True)
    solutions = {p.prompt: r["completion"] for p, r in zip(problems, smart_recs) if r["verified"]}
    attempts = score(stupid, tok, problems, temperature=cfg.attempt_temperature, num_samples=cfg.attempts,
                     seed=cfg.seed, progress_bar=True)
    pairs = build_pairs(problems, solutions, attempts, cfg, rng)
    print(f"smart solved {sum(r['correct'] for r in smart_recs)}/{len(problems)} problems "
          f"({sum(r['verified'] for r in smart_recs)} with every step right); "
          f"{sum(not a['verified'] for a in attempts)}/{len(attempts)} of stupid's attempts are wrong; "
          f"{len(pairs)} correction pairs")
    if not pairs:
        raise BadInput("no correction pairs: stupid made no mistakes on the training problems, or smart solved none")

    corrections, plain = training_examples(pairs, cfg.keep, stupid.cfg.max_digit_index - 1, cfg.target)
    examples = with_replay(corrections, plain, cfg, rng)
    start = stupid if cfg.learner_from == "stupid" else smart
    how = dict(freeze=cfg.freeze, adapter=cfg.adapter)
    learner = finetune(start, examples, cfg, tok, device, "learner", cfg.seed, **how)
    if cfg.self_pairs:   # the learner's own wrong outputs become attempts too
        recs = correct(learner, tok, [p for p, _, _ in pairs], [att for _, att, _ in pairs], cfg.target)
        own = [(correction_prompt(p.prompt, r["completion"], learner.cfg.max_digit_index - 1), written(sol, cfg.target))
               for (p, _, sol), r in zip(pairs, recs) if not r["correct"]]
        print(f"self pairs: the learner was wrong on {len(own)} of its {len(pairs)} training pairs")
        learner = finetune(learner, examples + own, replace(cfg, steps=cfg.self_steps), tok, device, "learner+self",
                           cfg.seed, **how)
    onpolicy, before, done = [], {}, cfg.steps + (cfg.self_steps if cfg.self_pairs else 0)
    for r in range(cfg.rounds):   # its verified corrections of all rounds so far; no answer past N is ever used
        before[f"learner_round{r}"] = learner, done + r * cfg.round_steps   # each round's start (probe.py)
        fresh = [stream.sample() for _ in range(cfg.round_problems)]
        new, line = onpolicy_round(learner, smart, stupid, tok, fresh, cfg, cfg.seed + 1 + r)
        onpolicy += new
        plain += [(p.prompt, x["completion"]) for p, x in zip(fresh, score(smart, tok, fresh)) if x["verified"]]
        print(f"round {r + 1}: {line}")
        if onpolicy:
            learner = finetune(learner, onpolicy, replace(cfg, steps=cfg.round_steps), tok, device,
                               f"learner round {r + 1}", cfg.seed + 1 + r, **how)
    # the controls get the same budget, and smart's solutions of the rounds' problems too
    steps = done + cfg.rounds * cfg.round_steps
    trained = {"learner": (learner, steps), **before}
    if cfg.controls:
        ccfg = replace(cfg, steps=steps)
        ei = score(smart, tok, [p for p, _, _ in pairs], temperature=cfg.attempt_temperature, seed=cfg.seed + 1)
        # smart's own verified-correct samples: its greedy solutions and its right samples
        own = plain + [(p.prompt, r["completion"]) for (p, _, _), r in zip(pairs, ei) if r["verified"]]
        trained["expert_iteration"] = finetune(smart, own, ccfg, tok, device, "expert_iteration", cfg.seed), steps
        trained["learner_no_attempt"] = (finetune(stupid, plain, ccfg, tok, device, "learner_no_attempt", cfg.seed),
                                         steps)
    for name, (model, step) in trained.items():   # written only once everything has trained
        stage = "learner" if name.startswith("learner_round") else name
        save_checkpoint(f"{out}/{name}/ckpt.pt", model, stage, step, data, run,
                        extra={"improve_cfg": asdict(cfg), "target": cfg.target} if stage == "learner" else None)
    write_text(f"{out}/learner/pairs.jsonl", pairs_jsonl(pairs))
    for path in glob.glob(f"{out}/learner_round*/ckpt.pt"):   # rounds of an earlier learner: not this one's
        if os.path.basename(os.path.dirname(path)) not in before:
            os.remove(path)
    print(f"wrote {out}/learner/ckpt.pt{' and the controls' if cfg.controls else ''} "
          f"and {out}/learner/pairs.jsonl in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    run_main(main)
