"""
A cheap screen of stage 5's round: go on from a copy of an extend.py run's last finished round for
a few rounds with one thing about the round changed; the copy's results.md holds the run's rows,
then its own. With nothing changed the copy makes the run's own rounds, bit for bit (extend.py's
--resume), so a difference is the change's. A round's time is split as it goes: labelling, tuning,
the report (split.json).

    python extend.py --seed=0 --out_dir=out/extend-r6 --rounds=6     # a run's first six rounds
    python -m experiments.rounds --run=out/extend-r6 --out_dir=out/rounds/same
    python -m experiments.rounds --run=out/extend-r6 --out_dir=out/rounds/b32 --batch_size=32

What is changed:
    --batch_size B        B examples a tuning step, the steps scaled to keep the examples a round
    --keep_optimizer      each smart keeps its AdamW from round to round, warmed up only once
    --problems P          fresh problems labelled a length and round
"""

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from unittest.mock import patch

import torch

import common
import extend
from cli import BadInput, check_writable, opt, parse_config, run_main


@dataclass
class RoundsConfig:
    run: str = opt("out/extend-r6", "an extend.py run stopped at a round's end (its state.pt)")
    rounds: int = opt(3, "rounds to go on for", lo=1)
    batch_size: int = opt(extend.BATCH_SIZE, "examples a tuning step (the examples kept)", lo=1)
    keep_optimizer: bool = opt(False, "keep each smart's AdamW from round to round")
    problems: int = opt(None, "fresh problems a length and round; auto: the run's", lo=1)
    out_dir: str = opt("out/rounds", "where the copy goes on (a new folder)")

    def check(self):
        if os.path.exists(self.out_dir):
            raise BadInput(f"{self.out_dir} is there: give another --out_dir")
        check_writable(f"{self.out_dir}/state.pt")


def read_run(cfg):
    """The run's state and the paths of its smarts as trained, each one there."""
    path = f"{cfg.run}/state.pt"
    if not os.path.isfile(path):
        raise BadInput(f"{cfg.run}: no state.pt (an extend.py run's folder?)")
    try:
        state = torch.load(path, weights_only=False)
        extend.ExtendConfig(**state["config"])  # the options of a run of this extend.py
        smarts = [f"{cfg.run}/k{k}/smart/ckpt.pt" for k in range(state["config"]["smarts"])]
    except Exception as e:
        raise BadInput(f"{path} is not a readable extend.py state ({type(e).__name__})") from None
    for smart in smarts:
        if not os.path.isfile(smart):
            raise BadInput(f"{cfg.run}: no {smart}")
    return state, smarts


def copy_run(cfg, state, smarts):
    """The run's smarts and state copied to cfg.out_dir, with cfg's changes. -> the copy's config"""
    options = dict(state["config"])
    options["steps"] = options["steps"] * extend.BATCH_SIZE // cfg.batch_size
    options["problems"] = cfg.problems or options["problems"]
    for k, smart in enumerate(smarts):
        os.makedirs(f"{cfg.out_dir}/k{k}/smart")
        shutil.copy(smart, f"{cfg.out_dir}/k{k}/smart/ckpt.pt")
    torch.save(dict(state, config=options), f"{cfg.out_dir}/state.pt")  # what the copy resumes
    rounds = len(state["rows"]) - 1 + cfg.rounds
    resumed = dict(options, out_dir=cfg.out_dir, resume=True, rounds=rounds, minutes=0.0)
    return extend.ExtendConfig(**resumed)


def timed(split, part, fn):
    """fn, its seconds added to split[part]."""

    def run(*args):
        t = time.time()
        out = fn(*args)
        split[part] += time.time() - t
        return out

    return run


def kept_optimizers(optimizer):
    """Optim.optimizer that makes one AdamW a model and hands it back ever after, unwarmed."""
    made = {}

    def one_a_model(self, model):
        if id(model) in made:
            self.warmup = 0  # its moments are warm already
        else:
            made[id(model)] = optimizer(self, model)
        return made[id(model)]

    return one_a_model


def screened(cfg, split):
    """The round as cfg changes it, each part's seconds added to split; undone on leaving."""
    stack = contextlib.ExitStack()
    stack.enter_context(patch.object(extend, "BATCH_SIZE", cfg.batch_size))
    for part, name in (("label", "label_round"), ("tune", "tune"), ("report", "report_round")):
        stack.enter_context(patch.object(extend, name, timed(split, part, getattr(extend, name))))
    if cfg.keep_optimizer:
        kept = kept_optimizers(common.Optim.optimizer)
        stack.enter_context(patch.object(common.Optim, "optimizer", kept))
    return stack


def main(argv=None):
    cfg = parse_config(RoundsConfig, __doc__, argv)
    ecfg = copy_run(cfg, *read_run(cfg))
    split = dict(label=0.0, tune=0.0, report=0.0)
    with screened(cfg, split):
        state = extend.extend(ecfg)
    seconds = ", ".join(f"{part} {s:.0f} s" for part, s in split.items())
    print(f"{cfg.rounds} rounds from {cfg.run}: {seconds}")
    common.write_text(f"{cfg.out_dir}/split.json", json.dumps(asdict(cfg) | split) + "\n")
    return state


if __name__ == "__main__":
    run_main(main)
