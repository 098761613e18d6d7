"""
What two or more stages share, in the order a stage uses it: the command line (a config dataclass
per stage, checked before any work), the device, checkpoints, the fine-tuning loop of corrupt.py
and improve.py, and scoring (generate, then check). Stages import this, never each other.
"""

import argparse
import contextlib
import copy
import math
import operator
import os
import random
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from tqdm import tqdm

from cot_data import CharTokenizer, DataConfig, accuracy_by_digits, eval_problems, record_of
from llama import LlamaError, tokenizer_from_config
from model import GPT, ModelConfig, generate

# ----------------------------------------------------------------------------- the command line


class BadInput(Exception):
    """Anything the user can fix: an option, a file, a checkpoint. run_main makes it one line."""


def run_main(main, argv=None):
    """main(argv); bad input is one line and exit code 2, Ctrl-C one line and exit code 130."""
    try:
        main(argv)
    except (BadInput, LlamaError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: checkpoints already saved are whole", file=sys.stderr)
        sys.exit(130)


def opt(default, help, choices=None, lo=None, hi=None, gt=None, lt=None, many=False):
    """A config field: its --help and its checks (lo <= x <= hi, gt < x < lt); many: repeatable."""
    checks = dict(choices=choices, lo=lo, hi=hi, gt=gt, lt=lt, many=many)
    return field(default=default, metadata=dict(help=help, **checks))


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
    def error(self, message):  # argparse would print its usage too: one line instead
        raise BadInput(message)


BOUNDS = dict(lo=">=", hi="<=", gt=">", lt="<")  # opt(lo=1): the value must be >= 1
COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def parse_config(cls, doc, argv=None):
    """--name=value for every field of the dataclass cls, all checked before any work."""
    ap = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        m = f.metadata
        text = f"{m['help']} [default: {'auto' if f.default is None else f.default}]"
        kind = {bool: strict_bool, int: int, float: finite_float}.get(f.type, str)
        kw = dict(type=kind, default=f.default, help=text, choices=m["choices"])
        if f.type is bool:  # --flag alone means true
            kw.update(nargs="?", const=True)
        else:
            kw.update(action="append" if m["many"] else "store")
        ap.add_argument(f"--{f.name}", **kw)
    cfg = cls(**vars(ap.parse_args(argv)))
    for f in fields(cfg):
        m, v = f.metadata, getattr(cfg, f.name)
        if isinstance(v, str) and not v and f.default:  # a path or a name: empty is a mistake
            raise BadInput(f"--{f.name} is empty")
        if v is None or isinstance(v, (list, bool, str)):
            continue
        for bound, sign in BOUNDS.items():
            if m[bound] is not None and not COMPARE[sign](v, m[bound]):
                raise BadInput(f"--{f.name}={v}: must be {sign} {m[bound]}")
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def check_fits(count, what):
    """Refuse a count of problems or samples whose records (about 4 KB each, with their texts)
    would take more than half of this machine's memory: better one line now than a hang later."""
    if count * 4096 > os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2:
        raise BadInput(f"{what}: {count:,} records are more than this machine's memory holds")


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
    """bf16 matmuls on a CUDA GPU with bf16 (weights and loss stay fp32); elsewhere nothing."""
    cuda = torch.device(device).type == "cuda"
    if cuda and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- checkpoints

# the models a run makes, one folder each; the controls get the learner's data and steps
CONTROLS = ("expert_iteration", "learner_no_attempt")
MODELS = ("smart", "stupid", "learner", *CONTROLS)


def check_writable(*paths):
    """Fail before the work, not after it: each path a file we can write in a folder we can make."""
    for path in map(os.path.abspath, paths):
        if os.path.isdir(path) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            what = "a folder" if os.path.isdir(path) else "read-only"
            raise BadInput(f"cannot write {path}: it is {what}")
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
    """A plain dict: weights, configs, stage, step, run id (smart's, copied by later stages)."""
    ckpt = dict(model=model.state_dict(), model_cfg=asdict(model.cfg), data_cfg=asdict(data))
    ckpt.update(stage=stage, step=step, run=run, **extra)
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path, stages=None, device="cpu", run=None):
    """-> (model, ckpt dict, DataConfig). stages: the stages accepted (None: any); run: the run id
    it must carry (None: any), so that stages refuse to mix the models of different runs."""
    if not os.path.isfile(path):
        raise BadInput(f"no checkpoint at {path}")
    try:  # weights_only: tensors and plain data, no code runs
        ckpt = torch.load(path, map_location=device, weights_only=True)
        data = DataConfig(**{f.name: ckpt["data_cfg"][f.name] for f in fields(DataConfig)})
        model = GPT(ModelConfig(**ckpt["model_cfg"]))
        model.load_state_dict(ckpt["model"])
        stage = ckpt["stage"]
    except Exception as e:
        name = type(e).__name__
        raise BadInput(f"{path} is not a readable nanocorrect checkpoint ({name})") from None
    if "run" not in ckpt:
        raise BadInput(f"{path} was written by an older nanocorrect (no run id): train again")
    if stages is not None and stage not in stages:
        raise BadInput(f"{path} was written by stage '{stage}', not by {' or '.join(stages)}")
    if run is not None and ckpt["run"] != run:  # a model of another smart's run
        raise BadInput(f"{path} is from another run ({ckpt['run']}, not {run}): make it again")
    return model.to(device), ckpt, data


def tokenizer_from(data):
    """The tokenizer a run was trained with, from its DataConfig."""
    if data.tokenizer["kind"] == "char":
        return CharTokenizer(data.tokenizer["vocab"])
    return tokenizer_from_config(data.tokenizer)


# ----------------------------------------------------------------------------- training batches


def pack(pairs, device):
    """(prompt ids, completion ids) pairs -> x, y, positions, mask: the examples end to end in rows
    as long as the longest (first fit, longest first), positions from 0 in each, and a mask
    (B, 1, T, T) keeping each to itself: the loss (on completions, y = -1 elsewhere) of one example
    a row, with less padding."""
    seqs = [p + c for p, c in pairs]
    T = max(map(len, seqs)) - 1
    rows, room = [], []
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        r = next((r for r, free in enumerate(room) if free >= len(seqs[i]) - 1), len(rows))
        if r == len(rows):
            rows.append([])
            room.append(T)
        rows[r].append(i)
        room[r] -= len(seqs[i]) - 1
    x, positions = (torch.zeros(len(rows), T, dtype=torch.long) for _ in range(2))
    y, example = (torch.full((len(rows), T), -1) for _ in range(2))  # padding: a block of its own
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            seq, n, p = torch.tensor(seqs[i]), len(seqs[i]) - 1, len(pairs[i][0])
            x[r, at : at + n], y[r, at + p - 1 : at + n] = seq[:-1], seq[p:]
            positions[r, at : at + n], example[r, at : at + n] = torch.arange(n), i
            at += n
    mask = (example[:, :, None] == example[:, None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    return x.to(device), y.to(device), positions.to(device), mask[:, None].to(device)


# ----------------------------------------------------------------------------- fine-tuning

ADAM_BETAS = (0.9, 0.98)  # a shorter memory of the second moment than 0.999: small, fast runs
GRAD_CLIP = 1.0  # the largest gradient norm a step may take
LR_DROP = 10  # the cosine schedule ends at the peak learning rate / LR_DROP


@dataclass
class Optim:
    """AdamW on batches of batch_size examples; the learning rate warms up linearly for `warmup`
    steps, then decays (cosine) to lr / LR_DROP at the last step."""

    steps: int
    lr: float
    batch_size: int = 64
    warmup: int = 100
    weight_decay: float = 0.0

    def lr_at(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = min(1.0, (step - self.warmup) / max(1, self.steps - self.warmup))
        low = self.lr / LR_DROP
        return low + 0.5 * (self.lr - low) * (1 + math.cos(math.pi * t))

    def optimizer(self, model):
        """AdamW; weight decay on the matrices only, not on the norms' gains."""
        matrices = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        groups = [dict(params=matrices, weight_decay=self.weight_decay), dict(params=rest)]
        return torch.optim.AdamW(groups, lr=self.lr, betas=ADAM_BETAS, weight_decay=0.0)


def pair_batches(pairs, tok, batch_size, device, seed=0):
    """get_batch(step) drawing at random from a list of (prompt text, completion text) pairs."""
    rng = random.Random(seed)
    encoded = [(encode_prompt(tok, p), tok.encode(c)) for p, c in pairs]
    return lambda step: pack([rng.choice(encoded) for _ in range(batch_size)], device)


def finetune_loop(model, get_batch, optim, every=0, on_eval=None, desc="fine-tune"):
    """Train `model` in place (train.py's loop, without its logging and checkpoints): optim.steps
    steps on get_batch(step). on_eval(step) runs every `every` steps (0: never) and at the end; it
    stops training by returning True."""
    optimizer, amp = optim.optimizer(model), autocast(next(model.parameters()).device)
    model.train()
    for step in tqdm(range(optim.steps), desc=desc, disable=None):
        for group in optimizer.param_groups:
            group["lr"] = optim.lr_at(step)
        x, y, positions, mask = get_batch(step)
        optimizer.zero_grad(set_to_none=True)
        with amp:
            _, loss = model(x, y, positions=positions, mask=mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        if on_eval and (step + 1 == optim.steps or (every and (step + 1) % every == 0)):
            if on_eval(step + 1):
                break
            model.train()  # on_eval may have left the model in eval mode


def finetune(model, examples, optim, tok, device, desc, seed):
    """A copy of `model` fine-tuned on (prompt, completion) texts; the model given is left as it is.
    Its randomness (batches, abacus offsets) comes from `seed` alone, so a model does not depend on
    what was trained before it: models can be compared and rerun one by one."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    batches = pair_batches(examples, tok, optim.batch_size, device, seed)
    finetune_loop(model, batches, optim, desc=desc)
    return model


def count_for_share(n, share):
    """How many items to add to n others so that they make `share` of the whole."""
    return int(n * share / max(1e-9, 1 - share))


# ----------------------------------------------------------------------------- scoring


def encode_prompt(tok, text):
    """A prompt's ids; a Llama tokenizer puts <|begin_of_text|> first, as Llama expects."""
    return ([tok.bos_id] if getattr(tok, "bos_id", None) is not None else []) + tok.encode(text)


GENERATE_BATCH = 256  # sequences generated at once


def complete(model, tok, prompts, max_new, temperature=0.0, num_samples=1, seed=0, **kw):
    """Completions (text) of text prompts, prompt-major; kw: top_k, progress_bar (on a terminal)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    stops = getattr(tok, "stop_ids", tok.stop_id)
    how = dict(temperature=temperature, top_k=kw.get("top_k"), stop_id=stops, pad_id=tok.pad_id)
    how.update(num_samples=num_samples, generator=gen)
    ids = [encode_prompt(tok, p) for p in prompts]
    out, amp, per = [], autocast(gen.device), max(1, GENERATE_BATCH // num_samples)
    quiet = None if kw.get("progress_bar") else True
    for i in tqdm(range(0, len(ids), per), desc="sampling", disable=quiet, leave=False):
        try:
            with amp:
                rows = generate(model, ids[i : i + per], max_new, **how)
        except ValueError as e:  # a prompt and its answer, or a number, longer than the model holds
            raise BadInput(str(e)) from None
        out += [tok.decode(r) for r in rows]
    return out


def max_new_for(problems):
    """Twice the reference completion: room for any sane attempt, and a bound on a broken one."""
    return 2 * max(len(p.completion) for p in problems) + 8


def score(model, tok, problems, prompts=None, temperature=0.0, num_samples=1, **kw):
    """Generate for each problem (from its prompt, or from `prompts`: correction prompts) and check
    each completion. -> one record (cot_data.record_of) per sample."""
    prompts, new = prompts or [p.prompt for p in problems], max_new_for(problems)
    comps = complete(model, tok, prompts, new, temperature, num_samples=num_samples, **kw)
    return [record_of(problems[j // num_samples], c) for j, c in enumerate(comps)]


def tokens_needed(tok, problems):
    """The learner's longest prompt, an attempt as long as the room to answer, '>', that room."""
    longest = max(len(encode_prompt(tok, p.prompt)) for p in problems)
    return longest + 2 * max_new_for(problems) + 1


def check_room(model, tok, problems):
    """Refuse, before any work, problems too long for the model: in tokens, or (abacus) digits."""
    if (need := tokens_needed(tok, problems)) > model.cfg.block_size:
        raise BadInput(
            f"a correction prompt is longer than the model supports: "
            f"{max(p.digits for p in problems)} digits need {need} tokens with room to answer, "
            f"the model holds {model.cfg.block_size}"
        )
    longest = max(len(m) for p in problems for m in re.findall(r"\d+", p.prompt + p.completion))
    if model.cfg.abacus and longest >= model.cfg.max_digit_index:
        raise BadInput(
            f"a number of {longest} digits is longer than the model supports "
            f"(max_digit_index {model.cfg.max_digit_index})"
        )


def eval_accuracy(model, tok, data, lengths, size=100):
    """Greedy exact-match accuracy per length on the fixed evaluation sets."""
    return accuracy_by_digits(score(model, tok, eval_problems(data.task, data.fmt, lengths, size)))
