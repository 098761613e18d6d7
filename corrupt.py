"""
Corrupt smart into stupid: fine-tune a copy of smart on a mix of wrong solutions and right ones,
so that it gets worse at 1..N digits without being destroyed.

    python corrupt.py                       # wrong solutions are smart's own, sampled hot
    python corrupt.py --noise=dynamic       # wrong solutions made by the dynamic-noise injector
    python corrupt.py --band_hi=0.6         # stop at 0.6 x smart's accuracy

Training stops as soon as stupid's accuracy on 1..N falls to band_hi x smart's; the script says
where it landed and whether that is inside [BAND_LO, band_hi] x smart's accuracy.
"""

import copy
import random
import re
import time
from dataclasses import asdict, dataclass

import torch

from cli import BadInput, check_fits, check_writable, opt, parse_config, run_main
from common import (
    DEVICE_HELP,
    GENERATE_BATCH,
    Optim,
    count_for_share,
    eval_accuracy,
    finetune_loop,
    load_checkpoint,
    pair_batches,
    pick_device,
    save_checkpoint,
    score,
    tokenizer_from,
)
from cot_data import ProblemStream, dynamic_noise, percents, static_noise

EVAL_EVERY = 10  # steps between measurements of stupid on 1..N
EVAL_SIZE = 50  # problems per length in each measurement
# of the fine-tuning mix; the rest are right solutions, so stupid is not destroyed
WRONG_SHARE = 0.7
BAND_LO = 0.3  # stupid should land at or above BAND_LO x smart's accuracy
WARMUP = 20  # steps of linear warmup: the whole run may be a few dozen steps
BATCH_SIZE = 64  # examples per step
STATIC_RATE = 0.3  # noise=static: the share of the chain's digits changed


@dataclass
class CorruptConfig:
    out_dir: str = opt("out", "output root: reads OUT_DIR/smart, writes OUT_DIR/stupid/ckpt.pt")
    noise: str = opt(
        "sample",
        "where wrong solutions come from: smart's own samples, or the static noise "
        "(30%% of the chain's digits changed) or dynamic noise (one step wrong, carried on) of "
        "cot_data.py",
        choices=("sample", "static", "dynamic"),
    )
    steps: int = opt(400, "most fine-tuning steps (it stops at band_hi)", lo=1)
    lr: float = opt(1e-3, "peak learning rate", gt=0)
    problems: int = opt(512, "training problems (1..N digits) to make solutions for", lo=1)
    samples: int = opt(4, "smart's samples per problem (noise=sample)", lo=1, hi=GENERATE_BATCH)
    temperature: float = opt(2.0, "sampling temperature of smart's samples (noise=sample)", gt=0)
    band_hi: float = opt(0.7, "training stops at or below band_hi x smart's accuracy", gt=0, hi=1)
    seed: int = opt(2, "random seed", lo=0)
    device: str = opt("auto", DEVICE_HELP)

    def check(self):
        check_fits(self.problems * (self.samples if self.noise == "sample" else 1), "--problems")


def mean_accuracy(model, tok, data):
    acc = eval_accuracy(model, tok, data, range(1, data.max_digits + 1), EVAL_SIZE)
    return sum(acc.values()) / len(acc), acc


def wrong_and_right(smart, tok, problems, cfg, rng):
    """Wrong solutions (smart's own high-temperature mistakes, or injected noise) and right ones."""
    if cfg.noise == "sample":
        recs = score(
            smart,
            tok,
            problems,
            temperature=cfg.temperature,
            num_samples=cfg.samples,
            seed=cfg.seed,
            progress_bar=True,
        )
        # a wrong answer, not only a wrong step, that ends; and no number longer than the model
        # indexes, or it could not be trained on
        too_long = re.compile(r"\d{%d,}" % smart.cfg.max_digit_index)
        ends = [
            r["completion"].endswith("$") and not too_long.search(r["completion"]) for r in recs
        ]
        wrong = [
            (problems[j // cfg.samples].prompt, r["completion"])
            for j, r in enumerate(recs)
            if not r["correct"] and ends[j]
        ]
    elif cfg.noise == "dynamic":  # a problem where no step can go wrong comes back as it was
        noisy = [(p, dynamic_noise(p, rng)) for p in problems]
        wrong = [(q.prompt, q.completion) for p, q in noisy if q is not p]
    else:  # wrong working, right answer; a chain that drew no change is left out
        noisy = [(p, static_noise(p, STATIC_RATE, rng)) for p in problems]
        wrong = [(q.prompt, q.completion) for p, q in noisy if q.completion != p.completion]
    return wrong, [(p.prompt, p.completion) for p in problems]


def main(argv=None):
    cfg = parse_config(CorruptConfig, __doc__, argv)
    device = pick_device(cfg.device)
    path = f"{cfg.out_dir}/stupid/ckpt.pt"
    check_writable(path)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    smart, ckpt, data = load_checkpoint(f"{cfg.out_dir}/smart/ckpt.pt", ["smart"], device)
    tok = tokenizer_from(data)
    N = data.max_digits
    smart_acc, _ = mean_accuracy(smart, tok, data)
    lo, hi = BAND_LO * smart_acc, cfg.band_hi * smart_acc
    t0 = time.time()
    stream = ProblemStream(data.task, data.fmt, 1, N, seed=cfg.seed)
    problems = [stream.sample() for _ in range(cfg.problems)]
    wrong, right = wrong_and_right(smart, tok, problems, cfg, rng)
    if not wrong:
        raise BadInput("smart made no wrong samples to corrupt it with: raise --temperature")
    n_right = min(count_for_share(len(wrong), 1 - WRONG_SHARE), len(right))
    mix = wrong + rng.sample(right, n_right)
    print(f"corrupting with {len(wrong)} wrong ({cfg.noise}) and {n_right} right solutions")
    stupid = copy.deepcopy(smart)
    measured = {}

    def measure(step):  # stop once stupid is down to band_hi x smart's accuracy
        measured["step"] = step
        measured["acc"], measured["per"] = mean_accuracy(stupid, tok, data)
        return measured["acc"] <= hi

    # stupid is changed in place: it is a copy of smart
    optim = Optim(cfg.steps, cfg.lr, BATCH_SIZE, WARMUP)
    batches = pair_batches(mix, tok, optim.batch_size, device, cfg.seed)
    finetune_loop(stupid, batches, optim, EVAL_EVERY, measure, desc="stupid")
    acc = measured["acc"]
    step = measured["step"]
    extra = dict(corrupt_cfg=asdict(cfg), smart_accuracy=smart_acc, stupid_accuracy=acc)
    save_checkpoint(path, stupid, "stupid", step, data, ckpt["run"], extra)
    print("stupid on 1..N: " + percents(measured["per"]))
    if acc < lo:
        verdict = "BELOW the band: stupid is too broken"
    elif acc > hi:
        verdict = "ABOVE the band: stupid is barely hurt"
    else:
        verdict = "inside the band"
    print(
        f"stupid: {100 * acc:.1f}% on 1..{N} digits after {step} steps = "
        f"{acc / max(smart_acc, 1e-9):.2f} x smart's {100 * smart_acc:.1f}%, {verdict} "
        f"[{BAND_LO}, {cfg.band_hi}]; wrote {path} ({time.time() - t0:.0f}s)"
    )


if __name__ == "__main__":
    run_main(main)
