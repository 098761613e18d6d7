"""
Who must vote for a label? extend.py keeps a label only where all K smarts write the same
completion. Would fewer voters keep labels as clean, for less work? Each smart of an extend.py run
completes fresh problems (never evaluated ones) of each length given. Counted over those lengths:
the labels each rule would keep, and how many of them are wrong.
    all K       all the smarts write the same completion (extend.py's rule, less its length check)
    kA+kB       two smarts write the same completion
    kA          one smart's greedy completion, whatever it is
each also kept only where every token the voters wrote had a probability of at least P (the least
likely token decides: a completion's log-likelihood filter at its strictest). And for each smart,
where its wrong completions first leave the reference: a wall at one digit index shows as one
place. The truth is read here to count, never to decide: this is a measurement.

    python -m experiments.voters --run=out/extend --lengths=39-46
    python -m experiments.voters --run=out/extend-s2 --weights=smart --lengths=9-13
"""

import itertools
import os
from collections import Counter
from dataclasses import asdict, dataclass

from cli import BadInput, check_writable, opt, parse_config, run_main
from common import DEVICE_HELP, complete, load_checkpoint, pick_device, tokenizer_from
from cot_data import fresh_problems
from extend import label_shape
from report import markdown_table, read_along, results_paths, write_results


@dataclass
class VotersConfig:
    run: str = opt("out/extend", "an extend.py run: its smarts are kK/WEIGHTS/ckpt.pt")
    weights: str = opt("extended", "the smarts' last round, or as trained", ["extended", "smart"])
    lengths: str = opt("9-12", "the lengths completed, FIRST-LAST")
    problems: int = opt(256, "fresh problems a length", lo=1)
    confidence: str = opt("0.9,0.99", "the least token probabilities P to filter at, a list")
    out_dir: str = opt("out/voters", "where results.{md,json} go")
    device: str = opt("auto", DEVICE_HELP)

    def check(self):
        self.length_range()
        self.levels()

    def length_range(self):
        first, _, last = self.lengths.partition("-")
        if not (first.isdigit() and last.isdigit() and 0 < int(first) <= int(last)):
            raise BadInput(f"--lengths={self.lengths}: give FIRST-LAST, as 9-12")
        return range(int(first), int(last) + 1)

    def levels(self):
        """The confidence levels, 0 (no filter) first."""
        try:
            levels = [float(x) for x in self.confidence.split(",")]
        except ValueError:
            levels = []
        if not levels or not all(0 < p <= 1 for p in levels):
            raise BadInput(f"--confidence={self.confidence}: give probabilities in (0, 1]")
        return [0.0] + levels


def load_smarts(cfg, device):
    """The run's smarts k0, k1, ... as saved by extend.py (at least one)."""
    smarts = []
    for k in itertools.count():
        path = f"{cfg.run}/k{k}/{cfg.weights}/ckpt.pt"
        if not os.path.exists(path):
            break
        smart, _, data = load_checkpoint(path, ["smart"], device)
        smarts.append(smart)
    if not smarts:
        raise BadInput(f"{cfg.run}: no k0/{cfg.weights}/ckpt.pt (an extend.py run's folder?)")
    return smarts, data


def least_likely(model, tok, prompts, completions, batch=64):
    """Each completion's least likely token: its probability given all that came before it."""
    out = []
    for i in range(0, len(prompts), batch):
        logits, y = read_along(model, tok, prompts[i : i + batch], completions[i : i + batch])
        probs = logits.float().softmax(-1).gather(-1, y.clamp(min=0)[..., None])[..., 0]  # (B, T)
        out += probs.masked_fill(y < 0, 1.0).min(1).values.tolist()
    return out


def first_wrong(completion, reference):
    """Where a wrong completion first leaves its reference: in the answer (after '#'), or before."""
    i = next((j for j, (a, b) in enumerate(zip(completion, reference)) if a != b), None)
    if i is None:
        i = min(len(completion), len(reference))  # one stops early, or goes on
    hash_at = reference.index("#")
    return f"answer digit {i - hash_at}" if i > hash_at else f"chain position {i + 1}"


def count(cfg, smarts, data):
    """-> {rule: {P: [kept, wrong]}} and, per smart, a Counter of where its wrong ones go wrong."""
    tok = tokenizer_from(data)
    K = len(smarts)
    rules = {"all K": tuple(range(K))}
    rules.update({f"k{a}+k{b}": (a, b) for a, b in itertools.combinations(range(K), 2) if K > 2})
    rules.update({f"k{k}": (k,) for k in range(K) if K > 1})
    levels = cfg.levels()
    kept = {name: {p: [0, 0] for p in levels} for name in rules}
    walls = [Counter() for _ in smarts]
    for L in cfg.length_range():
        problems = fresh_problems(data.task, data.fmt, L, cfg.problems, "voters", set())
        prompts = [p.prompt for p in problems]
        room = label_shape(data, L)[2]
        votes = [complete(smart, tok, prompts, room) for smart in smarts]
        least = [least_likely(s, tok, prompts, v) for s, v in zip(smarts, votes)]
        for i, p in enumerate(problems):
            for name, who in rules.items():
                texts = {votes[k][i] for k in who}
                sure = min(least[k][i] for k in who)
                for level in levels if len(texts) == 1 else []:
                    kept[name][level][0] += sure >= level
                    kept[name][level][1] += sure >= level and texts != {p.completion}
            for k in range(K):
                if votes[k][i] != p.completion:
                    walls[k][first_wrong(votes[k][i], p.completion)] += 1
    return kept, walls


def main(argv=None):
    cfg = parse_config(VotersConfig, __doc__, argv)
    check_writable(*results_paths(cfg.out_dir)[:2])
    device = pick_device(cfg.device)
    smarts, data = load_smarts(cfg, device)
    kept, walls = count(cfg, smarts, data)
    header = ["rule"] + [f"P >= {p:g}: kept (wrong)" if p else "kept (wrong)" for p in cfg.levels()]
    rows = [[name] + [f"{k} ({w})" for k, w in by.values()] for name, by in kept.items()]
    text = f"{cfg.run} ({cfg.weights}), {cfg.problems} fresh problems at each of {cfg.lengths}"
    text += " digits: the labels each rule keeps\n\n" + markdown_table(header, rows) + "\n\n"
    places = []
    for k, wall in enumerate(walls):
        often = [f"{place}: {n}" for place, n in wall.most_common(3)]
        places.append([f"k{k}", sum(wall.values())] + often + [""] * (3 - len(often)))
    text += "Where each smart's wrong completions first leave the reference (the 3 places most "
    text += "often)\n\n" + markdown_table(["smart", "wrong", "1st", "2nd", "3rd"], places)
    counts = {name: {str(p): v for p, v in by.items()} for name, by in kept.items()}
    found = dict(config=asdict(cfg), kept=counts, walls=[dict(w) for w in walls])
    write_results(cfg.out_dir, text, found)


if __name__ == "__main__":
    run_main(main)
