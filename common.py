"""
What two or more stages share, in the order a stage uses it: the command line (a config dataclass
per stage, checked before any work), the device, checkpoints, the training loop, and scoring
(generate, then check). A stage imports this, cot_data and model, never another stage.
"""

import argparse
import contextlib
import math
import operator
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from cot_data import DataConfig, accuracy_by_digits, eval_problems, judged
from model import GPT, ModelConfig, generate, pack

# ----------------------------------------------------------------------------- the command line


class BadInput(Exception):
    """Anything the user can fix: an option, a file, a checkpoint. run_main makes it one line."""


def run_main(main, argv=None):
    """main(argv), with bad input as one line and exit code 2, and Ctrl-C as one line and exit code 130."""
    try:
        main(argv)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: nothing half-written; checkpoints already saved are intact",
            file=sys.stderr,
        )
        sys.exit(130)


def opt(default, help, choices=None, lo=None, hi=None, gt=None, lt=None, many=False):
    """A config field: its --help, its checks (lo <= x <= hi, gt < x < lt), many: may be given again."""
    return field(
        default=default,
        metadata=dict(help=help, choices=choices, lo=lo, hi=hi, gt=gt, lt=lt, many=many),
    )


def strict_bool(s):
    """true/false, 1/0, yes/no, on/off; anything else is an error, never a silent False."""
    if s.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return s.lower() in ("1", "true", "yes", "on")
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def finite_float(s):
    """A number; nan and inf are errors (a nan learning rate would train to nothing)."""
    if not math.isfinite(x := float(s)):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return x


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print usage + error: one line instead
        raise BadInput(message)


def parse_config(cls, doc, argv=None):
    """--name=value for every field of the dataclass cls, all checked (and cls.check()) before any work."""
    ap = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        m = f.metadata
        text = f"{m['help']} [default: {'auto' if f.default is None else f.default}]"
        kind = {bool: strict_bool, int: int, float: finite_float}.get(f.type, str)
        ap.add_argument(
            f"--{f.name}",
            type=kind,
            default=f.default,
            help=text,
            choices=m["choices"],
            **(
                dict(nargs="?", const=True)
                if f.type is bool
                else dict(action="append" if m["many"] else "store")
            ),
        )
    cfg = cls(**vars(ap.parse_args(argv)))
    for f in fields(cfg):
        m, v = f.metadata, getattr(cfg, f.name)
        if isinstance(v, str) and not v and f.default:  # a path or a name: empty is a mistake
            raise BadInput(f"--{f.name} is empty")
        if v is None or isinstance(v, (list, bool, str)):
            continue
        for bound, ok, sign in (
            ("lo", operator.ge, ">="),
            ("hi", operator.le, "<="),
            ("gt", operator.gt, ">"),
            ("lt", operator.lt, "<"),
        ):
            if m[bound] is not None and not ok(v, m[bound]):
                raise BadInput(f"--{f.name}={v}: must be {sign} {m[bound]}")
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def pick_device(name="auto"):
    """auto picks cuda, then mps, then cpu; a named device must exist here."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    if (kind := name.split(":")[0]) not in ("cpu", "cuda", "mps"):
        raise BadInput(f"--device={name}: use {DEVICE_HELP}")
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not mps):
        raise BadInput(f"--device={name}: no such device on this machine")
    return name


def autocast(device):
    """bf16 matmuls on a CUDA GPU that has bf16 (weights and loss stay fp32); elsewhere, as on a CPU, nothing."""
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported(
        including_emulation=False
    ):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- files and checkpoints


def check_writable(*paths):
    """Fail before the work, not after it: each path a file we can (over)write, in a folder we can make."""
    for path in map(os.path.abspath, paths):
        if os.path.isdir(path) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            raise BadInput(
                f"cannot write {path}: it is {'a folder' if os.path.isdir(path) else 'read-only'}"
            )
        parent = os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise BadInput(f"cannot write {path}: {parent} is not a writable folder")


def atomic_write(path, write):
    """write(tmp_path) then rename: a crash or Ctrl-C never leaves half a file behind."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        write(path + ".tmp")
        os.replace(path + ".tmp", path)
    finally:
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")


def write_text(path, text):
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_checkpoint(path, model, stage, step, data, run, **extra):
    """A plain dict: weights, configs, stage, step, run id (smart's, which later stages copy), extras."""
    ckpt = {
        "model": model.state_dict(),
        "model_cfg": asdict(model.cfg),
        "data_cfg": asdict(data),
        "stage": stage,
        "step": step,
        "run": run,
        **extra,
    }
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path, stages=None, device="cpu", run=None):
    """-> (model, ckpt dict, DataConfig). stages: the stages accepted (None = any); run: the run id
    it must carry (None = any): stages refuse to mix the models of different runs."""
    if not os.path.isfile(path):
        raise BadInput(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(
            path, map_location=device, weights_only=True
        )  # tensors and plain data: no code runs
        data = DataConfig(**{f.name: ckpt["data_cfg"][f.name] for f in fields(DataConfig)})
        model = GPT(ModelConfig(**ckpt["model_cfg"]))
        model.load_state_dict(ckpt["model"])
        stage = ckpt["stage"]
    except Exception as e:
        raise BadInput(
            f"{path} is not a readable nanocorrect checkpoint ({type(e).__name__})"
        ) from None
    if "run" not in ckpt:
        raise BadInput(
            f"{path} was written by an older nanocorrect (it has no run id): run train.py again"
        )
    if stages is not None and stage not in stages:
        raise BadInput(
            f"{path} was written by stage '{stage}', expected one of: {', '.join(stages)}"
        )
    if run is not None and ckpt["run"] != run:
        raise BadInput(
            f"{path} belongs to another run than the smart model it is used with "
            f"(run {ckpt['run']}, expected {run}): run its stage again"
        )
    return model.to(device), ckpt, data


# ----------------------------------------------------------------------------- training


@dataclass
class Optim:
    """AdamW on batches of batch_size examples; the learning rate warms up linearly for `warmup`
    steps, then decays (cosine) to a tenth of lr; the gradient norm is clipped to 1."""

    steps: int
    lr: float
    batch_size: int = 64
    warmup: int = 100
    weight_decay: float = 0.0

    def lr_at(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t, low = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup)), self.lr / 10
        return low + 0.5 * (self.lr - low) * (1 + math.cos(math.pi * t))

    def optimizer(self, model):
        """AdamW; weight decay on the matrices only, not on norms' gains."""
        matrices, rest = (
            [p for p in model.parameters() if p.dim() >= 2],
            [p for p in model.parameters() if p.dim() < 2],
        )
        return torch.optim.AdamW(
            [
                {"params": matrices, "weight_decay": self.weight_decay},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=self.lr,
            betas=(0.9, 0.98),
        )


def pair_batches(pairs, tok, batch_size, device, seed=0):
    """get_batch(step) over a fixed list of (prompt text, completion text) pairs, drawn at random."""
    rng = random.Random(seed)
    encoded = [(encode_prompt(tok, p), tok.encode(c)) for p, c in pairs]
    return lambda step: pack([rng.choice(encoded) for _ in range(batch_size)], device)


def train_loop(model, get_batch, o, optimizer=None, start=0, every=0, on_eval=None, desc="train"):
    """Train `model` in place, steps start..o.steps-1 on get_batch(step); on_eval(step) runs every `every`
    steps (0: never) and at the end, and stops training by returning True. -> the number of steps done."""
    optimizer = optimizer or o.optimizer(model)
    amp, t0, tokens, step = autocast(next(model.parameters()).device), time.time(), 0, start
    model.train()
    bar = tqdm(range(start, o.steps), desc=desc, initial=start, total=o.steps, disable=None)
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = o.lr_at(step)
        x, y, positions, mask = get_batch(step)
        optimizer.zero_grad(set_to_none=True)
        with amp:
            _, loss = model(x, y, positions=positions, mask=mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += int((y >= 0).sum())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
        if on_eval and (step == o.steps - 1 or (every and (step + 1) % every == 0)):
            if on_eval(step + 1):
                return step + 1
            model.train()
    return step + 1 if o.steps > start else start


def count_for_share(n, share):
    """How many items to add to n others so that they make `share` of the whole."""
    return int(n * share / max(1e-9, 1 - share))


# ----------------------------------------------------------------------------- scoring


def encode_prompt(tok, text):
    """A prompt's ids; a Llama tokenizer puts <|begin_of_text|> first, as Llama expects."""
    return ([tok.bos_id] if getattr(tok, "bos_id", None) is not None else []) + tok.encode(text)


def complete(
    model,
    tok,
    prompts,
    max_new_tokens,
    temperature=0.0,
    top_k=None,
    num_samples=1,
    batch_size=256,
    seed=0,
    progress_bar=False,
):
    """Completions (text) of text prompts, prompt-major when num_samples > 1."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ids = [encode_prompt(tok, p) for p in prompts]
    out, amp, per = [], autocast(gen.device), max(1, batch_size // num_samples)
    for i in tqdm(
        range(0, len(ids), per),
        desc="sampling",
        disable=None if progress_bar else True,
        leave=False,
    ):
        try:
            with amp:
                rows = generate(
                    model,
                    ids[i : i + per],
                    max_new_tokens,
                    temperature,
                    top_k,
                    getattr(tok, "stop_ids", tok.stop_id),
                    num_samples,
                    tok.pad_id,
                    generator=gen,
                )
        except ValueError as e:  # a prompt and its answer, or a number, longer than the model holds
            raise BadInput(str(e)) from None
        out += [tok.decode(r) for r in rows]
    return out


def max_new_for(problems):
    """Room for twice the reference completion: enough for any sane attempt, bounded for a broken one."""
    return 2 * max(len(p.completion) for p in problems) + 8


def score(model, tok, problems, prompts=None, temperature=0.0, num_samples=1, **kw):
    """Generate for each problem (from its prompt, or from `prompts`: correction prompts) and check each
    completion. -> one record (cot_data.judged) per sample."""
    comps = complete(
        model,
        tok,
        prompts or [p.prompt for p in problems],
        max_new_for(problems),
        temperature,
        num_samples=num_samples,
        **kw,
    )
    return [judged(problems[j // num_samples], c) for j, c in enumerate(comps)]


def tokens_needed(tok, problems):
    """Tokens the learner needs: the longest prompt, an attempt as long as the room to answer, '>', that room."""
    return max(len(encode_prompt(tok, p.prompt)) for p in problems) + 2 * max_new_for(problems) + 1


def check_room(model, tok, problems):
    """Refuse, before any work, problems the model cannot hold: the learner's longest prompt with room
    to answer, and (abacus positions) the longest number."""
    if (need := tokens_needed(tok, problems)) > model.cfg.block_size:
        raise BadInput(
            f"a correction prompt is longer than the model supports: {max(p.digits for p in problems)} "
            f"digits need {need} tokens with room to answer, the model holds {model.cfg.block_size}"
        )
    run = max(len(m) for p in problems for m in re.findall(r"\d+", p.prompt + p.completion))
    if model.cfg.abacus and run >= model.cfg.max_digit_index:
        raise BadInput(
            f"a number of {run} digits is longer than the model supports "
            f"(max_digit_index {model.cfg.max_digit_index})"
        )


def eval_accuracy(model, tok, data, lengths, size=100):
    """Greedy exact-match accuracy per length on the fixed evaluation sets."""
    return accuracy_by_digits(score(model, tok, eval_problems(data.task, data.fmt, lengths, size)))


def percents(acc):
    """'1:100% 2:96% ...' for a line of output."""
    return " ".join(f"{n}:{100 * a:.0f}%" for n, a in acc.items())
