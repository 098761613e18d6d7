"""
Corrupt smart into stupid: fine-tune a copy of smart on a mix of wrong solutions and right ones,
so that it gets worse at 1..N digits without being destroyed.

    python corrupt.py                       # wrong samples are smart's own, at a high temperature
    python corrupt.py --noise=dynamic       # wrong samples made by the dynamic-noise injector
    python corrupt.py --band_lo=0.4 --band_hi=0.6

Training stops as soon as stupid's accuracy on 1..N falls to band_hi x smart's; the script says
where it landed and whether that is inside [band_lo, band_hi] x smart's accuracy.
"""
import random
import time

import torch

from cot_data import ProblemStream, dynamic_noise, eval_exclusions, eval_set, static_noise
from model import fail, pick_device, save_checkpoint
from sample import accuracy_by_digits, score, tokenizer_from
from train import cli, load_or_fail, pair_batches, train_loop

DEFAULTS = dict(
    out_dir="out", noise="sample",        # sample: smart's own wrong samples; static / dynamic: injected
                                          # (sample: the best learner o smart at N+1 in experiments/sweep.py)
    problems=512, samples=4, temperature=2.0, static_rate=0.3,
    wrong_frac=0.7,                       # share of wrong solutions in the fine-tuning mix
    steps=400, batch_size=64, lr=1e-3, min_lr=1e-4, warmup=20, weight_decay=0.0, grad_clip=1.0,
    eval_every=10, eval_size=50,          # how often to check the band, on how many problems per length
    band_lo=0.3, band_hi=0.7, seed=2, device="auto",
)


def mean_accuracy(model, tok, data_cfg, size):
    probs = [p for n in range(1, data_cfg["max_digits"] + 1)
             for p in eval_set(data_cfg["task"], n, data_cfg["fmt"], size)]
    acc = accuracy_by_digits(score(model, tok, probs))
    return sum(acc.values()) / len(acc), acc


def wrong_and_right(smart, tok, problems, cfg, rng):
    """Wrong solutions (smart's own high-temperature mistakes, or injected noise) and right ones."""
    if cfg["noise"] == "sample":
        recs = score(smart, tok, problems, temperature=cfg["temperature"], num_samples=cfg["samples"],
                     seed=cfg["seed"], progress=True)
        pairs = [(problems[j // cfg["samples"]].prompt, r["completion"], r["correct"]) for j, r in enumerate(recs)]
        wrong = [(p, c) for p, c, ok in pairs if not ok and c.endswith("$")]
    else:
        noisy = [dynamic_noise(p, rng) if cfg["noise"] == "dynamic" else static_noise(p, cfg["static_rate"], rng)
                 for p in problems]
        wrong = [(q.prompt, q.completion) for q in noisy]
    right = [(p.prompt, p.completion) for p in problems]
    return wrong, right


def main(argv=None):
    cfg = cli(DEFAULTS, __doc__, argv)
    if cfg["noise"] not in ("sample", "static", "dynamic"):
        fail("--noise must be sample, static or dynamic")
    torch.manual_seed(cfg["seed"])
    rng = random.Random(cfg["seed"])
    device = pick_device(cfg["device"])
    smart, ckpt = load_or_fail(f"{cfg['out_dir']}/smart/ckpt.pt", ["smart"], device)
    data_cfg, tok = ckpt["data_cfg"], tokenizer_from(ckpt["data_cfg"])
    task, N = data_cfg["task"], data_cfg["max_digits"]
    stream = ProblemStream(task, data_cfg["fmt"], 1, N, seed=cfg["seed"], exclude=eval_exclusions(task, N))
    problems = [stream.sample() for _ in range(cfg["problems"])]
    wrong, right = wrong_and_right(smart, tok, problems, cfg, rng)
    if not wrong:
        fail("smart made no wrong samples to corrupt it with: raise --temperature or --samples")
    n_right = int(len(wrong) * (1 - cfg["wrong_frac"]) / cfg["wrong_frac"])
    mix = wrong + rng.sample(right, min(n_right, len(right)))
    print(f"corrupting with {len(wrong)} wrong ({cfg['noise']}) and {len(mix) - len(wrong)} right solutions")

    smart_acc, _ = mean_accuracy(smart, tok, data_cfg, cfg["eval_size"])
    lo, hi = cfg["band_lo"] * smart_acc, cfg["band_hi"] * smart_acc
    stupid, path, t0 = smart, f"{cfg['out_dir']}/stupid/ckpt.pt", time.time()   # smart is not used again
    state = {}

    def on_eval(step):
        acc, per = mean_accuracy(stupid, tok, data_cfg, cfg["eval_size"])
        state.update(step=step, acc=acc, per=per)
        return acc <= hi

    train_loop(stupid, pair_batches(mix, tok, cfg["batch_size"], device, cfg["seed"]), cfg,
               on_eval=on_eval, desc="stupid")
    acc, per = state["acc"], state["per"]
    inside = lo <= acc <= hi
    save_checkpoint(path, stupid, "stupid", state["step"], data_cfg,
                    extra={"corrupt_cfg": cfg, "smart_accuracy": smart_acc, "stupid_accuracy": acc})
    print("stupid on 1..N: " + " ".join(f"{n}:{100 * a:.0f}%" for n, a in per.items()))
    verdict = "inside the band" if inside else ("BELOW the band: stupid is too broken"
                                                if acc < lo else "ABOVE the band: stupid is barely hurt")
    print(f"stupid: {100 * acc:.1f}% on 1..{N} digits after {state['step']} steps = "
          f"{acc / max(smart_acc, 1e-9):.2f} x smart's {100 * smart_acc:.1f}%, {verdict} "
          f"[{cfg['band_lo']}, {cfg['band_hi']}]; wrote {path} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
