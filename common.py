"""
What every stage shares, in the order a stage uses it: the command line (a config dataclass per
stage, checked before any work), the device, checkpoints, the training loop, scoring, and writing
results. Stages import this, cot_data and model; no stage imports another.
"""
import argparse
import contextlib
import copy
import json
import math
import os
import random
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields

import torch
import torch.nn.utils.parametrize
from tqdm import tqdm

from cot_data import (KEEP, MISTAKES, CharTokenizer, answer_of, chain_of, check, check_chain, correction_prompt,
                      eval_set, mistake_kinds)
from model import GPT, ModelConfig, generate


# ----------------------------------------------------------------------------- errors

class BadInput(Exception):
    """Anything the user can fix: an option, a file, a checkpoint. Scripts turn it into one line."""


class CheckpointError(BadInput):
    """A checkpoint that is missing, unreadable, from the wrong stage or from another run."""


def fail(msg):
    """The one-line error every script uses for bad input: message on stderr, exit code 2."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def run_main(main, argv=None):
    """Run a script's main(argv): bad input is one line and exit code 2; Ctrl-C is one line and
    exit code 130 (checkpoints are written by rename, so the last one is whole)."""
    from llama import LlamaError
    try:
        main(argv)
    except (BadInput, LlamaError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        print("\ninterrupted: nothing half-written; checkpoints already saved are intact", file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------- config and command line

def opt(default, help, choices=None, lo=None, hi=None, gt=None, lt=None, many=False):
    """A config field with its --help text and its checks: choices, lo <= x <= hi, gt < x < lt.
    many: the option may be given several times (a list)."""
    return field(default=default, metadata=dict(help=help, choices=choices, lo=lo, hi=hi, gt=gt, lt=lt, many=many))


def _meta(cls, name):
    """A field's metadata; a subclass that only changes a default inherits its base's help and checks."""
    for base in cls.__mro__:
        f = getattr(base, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata:
            return f.metadata
    return {}


def strict_bool(s):
    """true/false, 1/0, yes/no, on/off; anything else is an error, never a silent False."""
    s = s.lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def finite_float(s):
    """A number; nan and inf are errors (a nan learning rate would train to nothing)."""
    x = float(s)
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return x


class _Parser(argparse.ArgumentParser):
    def error(self, message):           # argparse would print usage + error: one line instead
        raise BadInput(message)


def parse_config(cls, doc, argv=None):
    """--name=value for every field of the dataclass cls, checked (type, range, choice, and the
    config's own check() for options that must agree) before anything else happens."""
    ap = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    types = {bool: strict_bool, int: int, float: finite_float, str: str}
    optim = {f.name for f in fields(Optim)}
    for f in sorted(fields(cls), key=lambda f: f.name in optim):   # the stage's own options first
        m, default = _meta(cls, f.name), f.default if f.default is not MISSING else None
        kind = f.type if isinstance(f.type, type) else type(default)
        extra = f" (one of: {', '.join(m['choices'])})" if m.get("choices") else ""
        text = f"{m.get('help', '')}{extra} [default: {'auto' if default is None else default}]"
        if kind is bool:
            ap.add_argument(f"--{f.name}", type=strict_bool, nargs="?", const=True, default=default, help=text)
        else:
            ap.add_argument(f"--{f.name}", type=types.get(kind, str), default=default, help=text,
                            action="append" if m.get("many") else "store")
    cfg = cls(**vars(ap.parse_args(argv)))
    check_fields(cfg)
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def check_fields(cfg):
    """Each option against its own checks (opt's choices, lo, hi, gt, lt)."""
    for f in fields(cfg):
        m, v = _meta(type(cfg), f.name), getattr(cfg, f.name)
        if v is None or isinstance(v, (list, bool)):
            continue
        bad = f"--{f.name}={v}:"
        if m.get("choices") and v not in m["choices"]:
            raise BadInput(f"{bad} choose one of {', '.join(m['choices'])}")
        if m.get("lo") is not None and v < m["lo"]:
            raise BadInput(f"{bad} must be >= {m['lo']}")
        if m.get("hi") is not None and v > m["hi"]:
            raise BadInput(f"{bad} must be <= {m['hi']}")
        if m.get("gt") is not None and v <= m["gt"]:
            raise BadInput(f"{bad} must be > {m['gt']}")
        if m.get("lt") is not None and v >= m["lt"]:
            raise BadInput(f"{bad} must be < {m['lt']}")


@dataclass
class Optim:
    """The training loop's options; each stage that trains takes them, with its own defaults."""
    steps: int = opt(1800, "optimizer steps (one batch each)", lo=1)
    batch_size: int = opt(64, "examples per optimizer step", lo=1)
    lr: float = opt(2e-3, "peak learning rate (AdamW)", gt=0)
    min_lr: float = opt(2e-4, "learning rate at the end of the cosine decay", lo=0)
    warmup: int = opt(100, "steps of linear warmup", lo=0)
    weight_decay: float = opt(0.1, "AdamW weight decay of the matrices", lo=0)
    grad_clip: float = opt(1.0, "clip the gradient norm to this", gt=0)
    pack: bool = opt(True, "lay a batch's examples end to end in rows, each attending only to itself, instead of "
                     "padding each to the longest: the same loss with fewer positions to compute")

    def check_optim(self):
        if self.min_lr > self.lr:
            raise BadInput(f"--min_lr={self.min_lr} is above --lr={self.lr}")


@dataclass
class DataConfig:
    """What a run is trained on, saved in every checkpoint of the run."""
    task: str
    fmt: str
    max_digits: int
    tokenizer: dict


def llama_dir(init_from):
    """'llama:DIR' -> DIR, else None."""
    return init_from[len("llama:"):] if init_from.startswith("llama:") else None


# ----------------------------------------------------------------------------- device

def pick_device(name="auto"):
    """auto picks cuda, then mps, then cpu; a named device must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise BadInput(f"--device={name}: use auto, cpu, cuda, cuda:N or mps")
    if (kind == "cuda" and not torch.cuda.is_available()) or (kind == "mps" and not torch.backends.mps.is_available()):
        raise BadInput(f"--device={name}: no such device on this machine")
    return name


def autocast(device):
    """Mixed precision where it pays: on a CUDA GPU with bf16, matmuls and attention run in bf16 while
    the weights, the optimizer and the loss stay fp32. On a CPU it did not pay (no faster on this
    project's 2-core AVX-512 machine) and it would change the numbers, so elsewhere it does nothing."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- files and checkpoints

def check_writable(*paths):
    """Fail before the work, not after it: each path must be a file we can (over)write, in a folder
    that exists or can be made."""
    for path in paths:
        path = os.path.abspath(path)
        if os.path.isdir(path):
            raise BadInput(f"cannot write {path}: it is a folder")
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise BadInput(f"cannot write {path}: it is read-only")
        parent = os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise BadInput(f"cannot write {path}: {parent} is not a writable folder")


def atomic_write(path, write):
    """write(tmp_path) then rename: a crash or Ctrl-C never leaves half a file behind."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def new_run_id():
    """Every checkpoint of one experiment carries smart's run id; stages refuse to mix runs."""
    return uuid.uuid4().hex[:12]


def save_checkpoint(path, model, stage, step, data, run, optimizer=None, extra=None):
    """A plain dict: model weights and config, data config (with the tokenizer), stage, step, run."""
    ckpt = {"model": model.state_dict(), "model_cfg": asdict(model.cfg), "data_cfg": asdict(data),
            "stage": stage, "step": step, "run": run}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    ckpt.update(extra or {})
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))


def load_checkpoint(path, stages=None, device="cpu", run=None):
    """-> (model, ckpt dict, DataConfig). stages: the stages accepted (None = any); run: the run id
    it must carry (None = any)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)   # tensors and plain data: no code runs
        cfg = ModelConfig(**ckpt["model_cfg"])
        stage, data = ckpt["stage"], ckpt["data_cfg"]
        data = DataConfig(**{f.name: data[f.name] for f in fields(DataConfig)})
        model = GPT(cfg)
        model.load_state_dict(ckpt["model"])
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable nanocorrect checkpoint ({type(e).__name__})") from None
    if "run" not in ckpt:
        raise CheckpointError(f"{path} was written by an older nanocorrect (it has no run id): run train.py again")
    if stages is not None and stage not in stages:
        raise CheckpointError(f"{path} was written by stage '{stage}', expected one of: {', '.join(stages)}")
    if run is not None and ckpt.get("run") != run:
        raise CheckpointError(f"{path} belongs to another run than the smart model it is used with "
                              f"(run {ckpt.get('run')}, expected {run}): run its stage again")
    return model.to(device), ckpt, data


def tokenizer_from(data):
    """The tokenizer a run was trained with, from its DataConfig."""
    tc = data.tokenizer
    if tc["kind"] == "char":
        return CharTokenizer(tc["vocab"])
    from llama import LlamaTokenizer
    if not os.path.isfile(tc["path"]):
        raise CheckpointError(f"the run's Llama tokenizer {tc['path']} is gone")
    return LlamaTokenizer(tc["path"])


# ----------------------------------------------------------------------------- training

def log(msg):
    """A line of output that leaves a progress bar intact."""
    tqdm.write(msg)


def progress(iterable, **kw):
    """A tqdm bar on a terminal; nothing when output goes to a file or a pipe."""
    return tqdm(iterable, disable=None, **kw)


def collate(pairs, device):
    """(prompt ids, completion ids) pairs -> x, y right-padded; the loss is on the completion only."""
    T = max(len(p) + len(c) for p, c in pairs) - 1
    x = torch.zeros(len(pairs), T, dtype=torch.long)
    y = torch.full((len(pairs), T), -1, dtype=torch.long)
    for i, (p, c) in enumerate(pairs):
        seq = torch.tensor(p + c)
        x[i, :len(seq) - 1] = seq[:-1]
        y[i, len(p) - 1:len(seq) - 1] = seq[len(p):]
    return x.to(device), y.to(device)


def pack(pairs, device):
    """The same examples as collate, laid end to end in rows as long as the longest (first fit,
    longest first). -> x, y, positions (from 0 in each example) and an attention mask that keeps
    each example to itself (B, 1, T, T): the loss is collate's, with fewer padded positions."""
    seqs = [p + c for p, c in pairs]
    T = max(map(len, seqs)) - 1
    rows, room = [], []
    for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i])):
        n = len(seqs[i]) - 1
        r = next((r for r, free in enumerate(room) if free >= n), len(rows))
        if r == len(rows):
            rows.append([])
            room.append(T)
        rows[r].append(i)
        room[r] -= n
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    positions = torch.zeros(len(rows), T, dtype=torch.long)
    example = torch.full((len(rows), T), -1, dtype=torch.long)   # padding: -1, a block of its own
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            seq, n, p = torch.tensor(seqs[i]), len(seqs[i]) - 1, len(pairs[i][0])
            x[r, at:at + n], y[r, at + p - 1:at + n] = seq[:-1], seq[p:]
            positions[r, at:at + n], example[r, at:at + n] = torch.arange(n), i
            at += n
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = (example[:, :, None] == example[:, None, :]) & causal
    return x.to(device), y.to(device), positions.to(device), mask[:, None].to(device)


def make_batch(pairs, device, packed):
    """A training batch (x, y, positions, mask): packed, or padded with the default causal mask."""
    return pack(pairs, device) if packed else (*collate(pairs, device), None, None)


def lr_at(step, cfg):
    """Linear warmup, then cosine decay to min_lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model, cfg):
    """AdamW; weight decay on the matrices only, not on norms' gains."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))


def train_loop(model, get_batch, cfg, optimizer=None, start_step=0, evaluate=None, eval_every=0, stop=None,
               desc="train"):
    """The one training loop; it trains `model` in place. AdamW, warmup + cosine, gradient clipping,
    a progress bar with loss and tokens/s. evaluate(step) runs every eval_every steps and at the end;
    training stops early once stop(its result) is true. get_batch(step) -> a batch (make_batch).
    Returns (steps done, the last evaluation's result or None)."""
    optimizer = optimizer or make_optimizer(model, cfg)
    amp = autocast(next(model.parameters()).device)
    model.train()
    bar = progress(range(start_step, cfg.steps), desc=desc, initial=start_step, total=cfg.steps)
    t0, tokens, step, result = time.time(), 0, start_step, None
    for step in bar:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y, positions, mask = get_batch(step)
        optimizer.zero_grad(set_to_none=True)
        with amp:
            _, loss = model(x, y, positions=positions, mask=mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        tokens += int((y >= 0).sum())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", tok_s=f"{tokens / (time.time() - t0):.0f}")
        if evaluate and (step == cfg.steps - 1 or (eval_every and (step + 1) % eval_every == 0)):
            result = evaluate(step + 1)
            if stop and stop(result):
                return step + 1, result
            model.train()
    return (step + 1 if cfg.steps > start_step else start_step), result


class LowRank(torch.nn.Module):
    """A weight W read as W + B A with B A of rank r and W frozen: a low-rank adapter (LoRA, Hu et al.
    2021). B starts at zero, so the adapted model starts as the model it adapts."""
    def __init__(self, weight, rank):
        super().__init__()
        self.A = torch.nn.Parameter(torch.randn(rank, weight.shape[1], device=weight.device) / weight.shape[1] ** 0.5)
        self.B = torch.nn.Parameter(torch.zeros(weight.shape[0], rank, device=weight.device))

    def forward(self, weight):
        return weight + self.B @ self.A


# the parameter-name prefixes that finetune(freeze=...) keeps as they are ("" starts every name)
FROZEN = {"none": (), "embeddings": ("tok_embeddings", "digit_embeddings", "pos_embeddings"), "all": ("",)}


def finetune(model, examples, cfg, tok, device, desc, seed, freeze="none", adapter=0):
    """A fine-tuned copy of `model` (the model given is left as it is) on (prompt, completion) texts.
    Its randomness (batches, abacus offsets) comes from `seed` alone, so a model does not depend on
    what was trained before it: the learner and the controls can be compared and rerun one by one.
    freeze: the weights that stay as they are (FROZEN); adapter: the rank of a LoRA adapter on every
    linear layer, trained and then merged into its weight, so the result is a plain model again."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        p.requires_grad_(not any(name.startswith(f) for f in FROZEN[freeze]))
    tied = model.output if model.cfg.tie_embeddings else None      # its weight is the embedding table's
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not tied] if adapter else []
    for m in layers:
        torch.nn.utils.parametrize.register_parametrization(m, "weight", LowRank(m.weight, adapter))
    train_loop(model, pair_batches(examples, tok, cfg, device, seed), cfg, desc=desc)
    for m in layers:
        torch.nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def stream_batches(stream, tok, cfg, device, noise=None):
    """get_batch() over a ProblemStream, cfg.batch_size problems a step (cfg: Optim); noise(problem)
    may rewrite a training problem."""
    def get_batch(step):
        probs = [stream.sample() for _ in range(cfg.batch_size)]
        if noise:
            probs = [noise(p) for p in probs]
        return make_batch([(encode_prompt(tok, p.prompt), tok.encode(p.completion)) for p in probs], device, cfg.pack)
    return get_batch


def pair_batches(pairs, tok, cfg, device, seed=0):
    """get_batch() over a fixed list of (prompt text, completion text) pairs, drawn at random."""
    rng = random.Random(seed)
    encoded = [(encode_prompt(tok, p), tok.encode(c)) for p, c in pairs]
    return lambda step: make_batch([rng.choice(encoded) for _ in range(cfg.batch_size)], device, cfg.pack)


def count_for_share(n, share):
    """How many items to add to n others so that they make `share` of the whole."""
    return int(n * share / max(1e-9, 1 - share))


# ----------------------------------------------------------------------------- scoring

def encode_prompt(tok, text):
    """A prompt's ids; a Llama tokenizer puts <|begin_of_text|> first, as Llama expects."""
    bos = getattr(tok, "bos_id", None)
    return ([bos] if bos is not None else []) + tok.encode(text)


def complete(model, tok, prompts, max_new_tokens, temperature=0.0, top_k=None, num_samples=1,
             batch_size=256, seed=0, progress_bar=False):
    """Completions (text) of text prompts, prompt-major when num_samples > 1."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ids = [encode_prompt(tok, p) for p in prompts]
    limit = model.cfg.block_size - max_new_tokens
    if limit < 1:
        raise BadInput(f"{max_new_tokens} new tokens do not fit the model ({model.cfg.block_size} tokens in all)")
    if max(map(len, ids)) > limit:
        raise BadInput(f"a prompt is longer than the model supports ({limit} tokens)")
    out, amp = [], autocast(gen.device)
    per = max(1, batch_size // num_samples)
    for i in tqdm(range(0, len(ids), per), desc="sampling", disable=None if progress_bar else True, leave=False):
        try:
            with amp:
                rows = generate(model, ids[i:i + per], max_new_tokens, temperature, top_k,
                                getattr(tok, "stop_ids", tok.stop_id), num_samples, tok.pad_id, generator=gen)
        except ValueError as e:   # a number longer than the model indexes
            raise BadInput(str(e)) from None
        out += [tok.decode(r) for r in rows]
    return out


def max_new_for(problems):
    """Room for twice the reference completion: enough for any sane attempt, bounded for a broken one."""
    return 2 * max(len(p.completion) for p in problems) + 8


def score(model, tok, problems, prompts=None, temperature=0.0, num_samples=1, **kw):
    """Generate for each problem (from its own prompt, or from `prompts` - e.g. a correction prompt
    holding an attempt) and check each completion. -> list of records (judged), one per sample."""
    prompts = prompts or [p.prompt for p in problems]
    comps = complete(model, tok, prompts, max_new_for(problems), temperature, num_samples=num_samples, **kw)
    return [judged(problems[j // num_samples], c) for j, c in enumerate(comps)]


def judged(p, completion):
    """The record of a completion: its parsed answer, correct (the answer is right: the reported
    metric) and verified (every step is right too: what a training target must be)."""
    answer, ok = check(p.task, p.fmt, p.operands, completion)
    return {"digits": p.digits, "operands": p.operands, "completion": completion, "answer": answer, "correct": ok,
            "verified": ok and check_chain(p.task, p.fmt, p.operands, completion)}


def tokens_needed(tok, problems, correcting=True):
    """Tokens a model must hold for these problems: the longest prompt and room to answer; with
    correcting, the learner's longest correction prompt - an attempt as long as that room, then '>' -
    and room to answer it."""
    new = max_new_for(problems)
    return max(len(encode_prompt(tok, p.prompt)) for p in problems) + (new + 1 if correcting else 0) + new


def check_room(model, tok, problems, correcting=True):
    """Refuse, before any work, problems that do not fit the model: the longest prompt with room to
    answer (and with correcting, room for an attempt in front of the answer), and (abacus positions)
    the longest number."""
    need = tokens_needed(tok, problems, correcting)
    if need > model.cfg.block_size:
        what = "a correction prompt" if correcting else "a prompt"
        raise BadInput(f"{what} is longer than the model supports: {max(p.digits for p in problems)} digits "
                       f"need {need} tokens with room to answer, the model holds {model.cfg.block_size} (block_size)")
    if model.cfg.abacus:
        run = max(len(m) for p in problems for m in re.findall(r"\d+", p.prompt + p.completion))
        if run >= model.cfg.max_digit_index:
            raise BadInput(f"a number of {run} digits is longer than the model supports "
                           f"(max_digit_index {model.cfg.max_digit_index})")


def correct(model, tok, problems, attempts, target="solution", **kw):
    """Hand the learner an attempt (a completion) at each problem; its answer replaces the attempt,
    unless the answer is KEEP, which keeps the attempt (the record then says kept). A learner whose
    target is "answer" writes only the answer: the program keeps the attempt's chain of thought. With
    "digits" the program also keeps the attempt's answer length and takes the learner's digits over
    the attempt's, one by one: an edit that can change digits but never runs on."""
    room = model.cfg.block_size - max_new_for(problems) - 1    # 1 for a Llama tokenizer's BOS
    prompts = [correction_prompt(p.prompt, a, model.cfg.max_digit_index - 1, room) for p, a in zip(problems, attempts)]
    recs = score(model, tok, problems, prompts=prompts, **kw)
    for r, p, a in zip(recs, problems, attempts):
        if r["completion"] == KEEP:
            r.update(judged(p, a), kept=True)
        elif target in ("answer", "digits"):
            r.update(judged(p, chain_of(a) + (r["completion"] if target == "answer"
                                              else overwrite(answer_of(a), r["completion"]))))
    return recs


def overwrite(answer, edit):
    """'#...$' of the attempt with its characters replaced, one by one, by the edit's: same length."""
    old, new = answer[1:].rstrip("$"), edit[1:].rstrip("$") if edit.startswith("#") else ""
    return "#" + new[:len(old)] + old[len(new):] + "$"


def accuracy_by_digits(recs):
    """{"digits": share correct}, shortest first; keyed by text, as results.json keys it."""
    acc = {}
    for r in recs:
        acc.setdefault(r["digits"], []).append(r["correct"])
    return {str(n): sum(v) / len(v) for n, v in sorted(acc.items())}


def chance_accuracy(problems):
    """{"digits": the accuracy of always giving that length's most common answer}: what a model that
    ignores the operands would score (near 0 for most tasks; gcd is drawn so that it stays low)."""
    by = {}
    for p in problems:
        by.setdefault(p.digits, Counter())[p.answer] += 1
    return {str(n): c.most_common(1)[0][1] / sum(c.values()) for n, c in sorted(by.items())}


def eval_problems(data, lengths, size):
    """The fixed evaluation problems of a run's task and format, `size` per length."""
    return [p for n in lengths for p in eval_set(data.task, n, data.fmt, size)]


def eval_accuracy(model, tok, data, lengths, size):
    """Greedy exact-match accuracy per length on the fixed evaluation sets."""
    return accuracy_by_digits(score(model, tok, eval_problems(data, lengths, size)))


def majority(rows):
    """The first of several samples that gives the most common parsed answer (None if no answer)."""
    votes = Counter(r["answer"] for r in rows if r["answer"] is not None).most_common(1)
    if not votes:
        return None, 0
    return next(r for r in rows if r["answer"] == votes[0][0]), votes[0][1]


def mistake_anatomy(recs, task, fmt):
    """The share of wrong records of each kind (cot_data.mistake_kinds), and how many are wrong."""
    wrong = [r for r in recs if not r["correct"]]
    kinds = Counter(k for r in wrong for k in mistake_kinds(task, fmt, r["operands"], r["completion"]))
    return {"wrong": len(wrong), **{k: kinds[k] / max(1, len(wrong)) for k in MISTAKES}}


def reach(acc, N):
    """The longest length L such that every length 1..L has >= 90% accuracy, divided by N."""
    L = 0
    while str(L + 1) in acc and acc[str(L + 1)] >= 0.9:
        L += 1
    return L / N


def near_miss(answer, truth):
    """A wrong answer of the right length with at most two wrong digits: something to correct."""
    return answer is not None and len(answer) == len(truth) and sum(a != b for a, b in zip(answer, truth)) <= 2


def percents(acc):
    """'1:100% 2:96% ...' for a line of output."""
    return " ".join(f"{n}:{100 * a:.0f}%" for n, a in acc.items())


# ----------------------------------------------------------------------------- results

def markdown_table(header, rows):
    """A markdown table from a header list and rows of cells (already formatted)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def pyplot():
    """matplotlib.pyplot without a screen, or None where matplotlib is not installed (it is optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def write_text(path, text):
    """A text file, written whole or not at all."""
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    atomic_write(path, write)


def results_paths(out_dir):
    return [os.path.join(out_dir, f"results.{ext}") for ext in ("md", "json", "png")]


def write_results(out_dir, text, data, fig=None):
    """results.md (the table), results.json (everything) and results.png (the plot, if one was made),
    each written whole or not at all."""
    print("\n" + text)
    md, js, png = results_paths(out_dir)

    write_text(md, text.rstrip("\n") + "\n")
    write_text(js, json.dumps(data))
    written = [md, js]
    if fig is not None:
        fig.tight_layout()
        atomic_write(png, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        written.append(png)
    print(f"wrote {', '.join(written)}")


def script(name, args, threads=None):
    """Run a stage script as a user would (--key=value args), for the studies in experiments/;
    a failure stops with the script's own last line."""
    root = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}))
    r = subprocess.run([sys.executable, name] + [f"--{k}={v}" for k, v in args.items()], cwd=root, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{name} {args}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return r.stdout
