"""
What the stages share for machine learning, in the order a stage uses it: the device, checkpoints,
training batches, the fine-tuning loop of corrupt.py and improve.py, and scoring (generate, then
check). The command line is cli.py; stages import these two, never each other.
"""

import contextlib
import copy
import math
import os
import random
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from cli import BadInput
from cot_data import CharTokenizer, DataConfig, accuracy_by_digits, eval_problems, record_of
from generate import generate
from llama import tokenizer_from_config
from model import GPT, ModelConfig

# ----------------------------------------------------------------------------- the device

DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def pick_device(name="auto"):
    """auto picks cuda, then mps, then cpu; a named device must exist here."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto" and torch.cuda.is_available():
        return "cuda"
    if name == "auto":
        return "mps" if mps else "cpu"
    kind = name.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
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


def save_checkpoint(path, model, stage, step, data, run, extra=None):
    """A plain dict: weights, configs, stage, step, run id (smart's, copied by later stages), and
    whatever else the stage keeps (`extra`: its options, an optimizer's state, ...)."""
    ckpt = dict(model=model.state_dict(), model_cfg=asdict(model.cfg), data_cfg=asdict(data))
    ckpt.update(stage=stage, step=step, run=run)
    ckpt.update(extra or {})
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


def encode_prompt(tok, text):
    """A prompt's ids; a Llama tokenizer puts <|begin_of_text|> first, as Llama expects."""
    bos = getattr(tok, "bos_id", None)
    return ([bos] if bos is not None else []) + tok.encode(text)


def first_fit(lengths, room):
    """Rows of indices into `lengths`, longest first, each in the first row with room left."""
    rows = []
    free = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, left in enumerate(free) if left >= lengths[i]), len(rows))
        if r == len(rows):
            rows.append([])
            free.append(room)
        rows[r].append(i)
        free[r] -= lengths[i]
    return rows


def pack(pairs, device):
    """(prompt ids, completion ids) pairs -> x, y, positions, mask: the examples end to end in rows
    as long as the longest (first fit), positions from 0 in each, and a mask keeping each example
    to itself: the loss (on completions, y = -1 elsewhere) of one example a row, less padding."""
    seqs = [p + c for p, c in pairs]
    inputs = [len(s) - 1 for s in seqs]  # a sequence is read up to its last token
    T = max(inputs)
    rows = first_fit(inputs, T)
    x = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T)
    y = torch.full((len(rows), T), -1)  # (B, T)
    positions = torch.zeros(len(rows), T, dtype=torch.long)  # (B, T)
    example = torch.full((len(rows), T), -1)  # (B, T): which example; padding is one of its own
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            seq = torch.tensor(seqs[i])
            n = inputs[i]
            p = len(pairs[i][0])
            x[r, at : at + n] = seq[:-1]
            y[r, at + p - 1 : at + n] = seq[p:]
            positions[r, at : at + n] = torch.arange(n)
            example[r, at : at + n] = i
            at += n
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = (example[:, :, None] == example[:, None, :]) & causal  # (B, T, T)
    return x.to(device), y.to(device), positions.to(device), mask[:, None].to(device)  # (B,1,T,T)


def pair_batches(pairs, tok, batch_size, device, seed=0):
    """get_batch(step) drawing at random from a list of (prompt text, completion text) pairs."""
    rng = random.Random(seed)
    encoded = [(encode_prompt(tok, p), tok.encode(c)) for p, c in pairs]
    return lambda step: pack([rng.choice(encoded) for _ in range(batch_size)], device)


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
    batch_size: int
    warmup: int
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


def finetune_loop(model, get_batch, optim, every=0, on_eval=None, desc="fine-tune"):
    """Train `model` in place (train.py's loop, without its logging and checkpoints): optim.steps
    steps on get_batch(step). on_eval(step) runs every `every` steps (0: never) and at the end; it
    stops training by returning True."""
    optimizer = optim.optimizer(model)
    amp = autocast(next(model.parameters()).device)
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
        last = step + 1 == optim.steps
        if on_eval and (last or (every and (step + 1) % every == 0)):
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

GENERATE_BATCH = 256  # sequences generated at once


def complete(
    model,
    tok,
    prompts,
    max_new,
    temperature=0.0,
    num_samples=1,
    seed=0,
    top_k=None,
    progress_bar=False,
):
    """Completions (text) of text prompts, num_samples each, prompt-major; the progress bar shows
    on a terminal only."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    stops = getattr(tok, "stop_ids", [tok.stop_id])
    ids = [encode_prompt(tok, p) for p in prompts for _ in range(num_samples)]
    per = max(1, GENERATE_BATCH // num_samples) * num_samples  # a prompt's samples together
    out = []
    quiet = None if progress_bar else True
    for i in tqdm(range(0, len(ids), per), desc="sampling", disable=quiet, leave=False):
        try:
            with autocast(device):
                rows = generate(
                    model, ids[i : i + per], max_new, stops, temperature, top_k, tok.pad_id, gen
                )
        except ValueError as e:  # a prompt and its answer, or a number, longer than the model holds
            raise BadInput(str(e)) from None
        out += [tok.decode(r) for r in rows]
    return out


def max_new_for(problems):
    """Twice the reference completion: room for any sane attempt, and a bound on a broken one."""
    return 2 * max(len(p.completion) for p in problems) + 8


def score(
    model,
    tok,
    problems,
    prompts=None,
    temperature=0.0,
    num_samples=1,
    seed=0,
    top_k=None,
    progress_bar=False,
):
    """Generate for each problem (from its prompt, or from `prompts`: correction prompts) and check
    each completion. -> one record (cot_data.record_of) per sample."""
    prompts = prompts or [p.prompt for p in problems]
    new = max_new_for(problems)
    comps = complete(model, tok, prompts, new, temperature, num_samples, seed, top_k, progress_bar)
    return [record_of(problems[j // num_samples], c) for j, c in enumerate(comps)]


def tokens_needed(tok, problems):
    """The learner's longest prompt, an attempt as long as the room to answer, '>', that room."""
    longest = max(len(encode_prompt(tok, p.prompt)) for p in problems)
    return longest + 2 * max_new_for(problems) + 1


def check_room(model, tok, problems):
    """Refuse, before any work, problems too long for the model: in tokens, or (abacus) digits."""
    need = tokens_needed(tok, problems)
    if need > model.cfg.block_size:
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
