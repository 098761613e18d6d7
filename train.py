"""
Train the smart model from scratch on chain-of-thought problems of 1..N digits.

    python train.py                          # addition of 1..8 digits: the main job's smart
    python train.py --task=mul               # N and steps follow the task (cot_data.TASKS)
    python train.py --max_digits=4 --steps=1000 --dim=64
    python train.py --resume                 # continue out/smart/ckpt.pt up to --steps
    python train.py --init_from=llama:DIR    # fine-tune Llama 3 weights as smart (llama.py)

A checkpoint holds the random state of the data and the model, so a resumed run ends with the same
weights as one that was never stopped (same options, on a CPU).
"""

import math
import time
import uuid
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from common import (
    DEVICE_HELP,
    BadInput,
    Optim,
    check_room,
    check_writable,
    encode_prompt,
    eval_accuracy,
    load_checkpoint,
    opt,
    parse_config,
    percents,
    pick_device,
    run_main,
    save_checkpoint,
    tokens_needed,
    train_loop,
)
from cot_data import (
    FORMATS,
    TASKS,
    CharTokenizer,
    DataConfig,
    ProblemStream,
    check_format,
    eval_problems,
    tokenizer_from,
)
from model import ABACUS_POS, GPT, ROPE_POS, ModelConfig, pack

EVAL_SIZE = 100  # evaluation problems per length


@dataclass
class TrainConfig:
    out_dir: str = opt("out", "output root; smart is written to OUT_DIR/smart/ckpt.pt")
    task: str = opt(
        "add",
        "the problems: addition, or multiplication by one digit (cot_data.TASKS)",
        choices=TASKS,
    )
    fmt: str = opt(
        "reverse", "how problems and chains of thought are written (cot_data.py)", choices=FORMATS
    )
    max_digits: int = opt(None, "N: smart is trained on 1..N digits; auto: the task's own N", lo=1)
    steps: int = opt(None, "optimizer steps; auto: the task's own number", lo=1)
    batch_size: int = opt(64, "problems per step", lo=1)
    lr: float = opt(
        2e-3, "peak learning rate (AdamW: 100 steps of warmup, then cosine decay to a tenth)", gt=0
    )
    eval_every: int = opt(
        900, "report accuracy and save every this many steps (0: at the end only)", lo=0
    )
    eval_extra: int = opt(4, "evaluate up to N + this many digits", lo=0)
    seed: int = opt(1337, "random seed of the weights and the data", lo=0)
    device: str = opt("auto", DEVICE_HELP)
    resume: bool = opt(
        False, "continue OUT_DIR/smart/ckpt.pt up to --steps (task, format and model from it)"
    )
    init_from: str = opt("scratch", "scratch, or llama:DIR to fine-tune Llama 3 weights as smart")
    # the model (ModelConfig in model.py): reverse + abacus is the pair experiments/sweep.py found to go furthest
    dim: int = opt(128, "width of the residual stream", lo=1)
    n_layers: int = opt(4, "transformer blocks", lo=1)
    n_heads: int = opt(4, "attention heads (must divide dim)", lo=1)
    ffn_hidden: int = opt(512, "hidden width of the MLP", lo=1)
    pos: str = opt(
        "abacus",
        "positions: a learned table, rope, none, abacus (each digit's index in its number), "
        "or abacus_rope (both)",
        choices=("learned", "rope", "none", "abacus", "abacus_rope"),
    )
    abacus_offset: int = opt(
        20, "abacus: random shift of digit indices in training, so long numbers get trained", lo=0
    )
    block_size: int = opt(
        None,
        "longest sequence in tokens; auto: the power of two that holds the learner's "
        "longest correction prompt (N + eval_extra digits) and room to answer",
        lo=2,
    )

    def check(self):
        self.max_digits = self.max_digits or TASKS[self.task].max_digits
        self.steps = self.steps or TASKS[self.task].steps
        try:
            check_format(self.task, self.fmt)
        except ValueError as e:
            raise BadInput(str(e)) from None
        if self.init_from != "scratch" and not self.init_from.startswith("llama:"):
            raise BadInput(f"--init_from={self.init_from}: use scratch or llama:DIR")
        if self.dim % self.n_heads or (self.pos in ROPE_POS and (self.dim // self.n_heads) % 2):
            raise BadInput(
                f"--n_heads={self.n_heads} must divide --dim={self.dim} (into an even head size for rope)"
            )
        longest = self.max_digits + self.eval_extra
        if self.pos in ABACUS_POS and longest + self.abacus_offset >= ModelConfig.max_digit_index:
            raise BadInput(
                f"max_digits + eval_extra + abacus_offset ({longest + self.abacus_offset}) must be "
                f"below {ModelConfig.max_digit_index}, the longest number the model indexes"
            )
        try:  # a format may not write numbers that long (hints)
            problems = eval_problems(self.task, self.fmt, range(1, longest + 1), EVAL_SIZE)
        except ValueError as e:
            raise BadInput(str(e)) from None
        self.block_size = self.block_size or 2 ** math.ceil(
            math.log2(tokens_needed(CharTokenizer(), problems))
        )


def new_smart(cfg, device):
    """A fresh model and its tokenizer, or Llama 3 weights and theirs."""
    if cfg.init_from.startswith("llama:"):
        from llama import load_llama

        model, tok = load_llama(cfg.init_from[len("llama:") :], device=device)
        if tok is None:
            raise BadInput(f"{cfg.init_from[len('llama:') :]} has no tokenizer.model")
        return model, tok
    tok = CharTokenizer()
    mcfg = ModelConfig(
        vocab_size=tok.vocab_size,
        digit_lo=tok.digit_lo,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_heads,
        ffn_hidden=cfg.ffn_hidden,
        pos=cfg.pos,
        block_size=cfg.block_size,
        abacus_offset=cfg.abacus_offset,
    )
    return GPT(mcfg).to(device), tok


def train(cfg, noise=None):
    """Train smart (or resume it) as cfg says, saving OUT_DIR/smart/ckpt.pt at every evaluation.
    noise(problem) -> problem may rewrite each training problem (experiments/noise.py)."""
    device, path = pick_device(cfg.device), f"{cfg.out_dir}/smart/ckpt.pt"
    check_writable(path)
    torch.manual_seed(cfg.seed)
    if cfg.resume:
        model, ckpt, data = load_checkpoint(path, ["smart"], device)
        if "rng" not in ckpt:
            raise BadInput(f"{path} holds no random state to resume from")
        if cfg.steps <= ckpt["step"]:
            raise BadInput(f"--steps={cfg.steps}: {path} is already at step {ckpt['step']}")
        tok, run, start = tokenizer_from(data), ckpt["run"], ckpt["step"]
    else:
        model, tok = new_smart(cfg, device)
        data = DataConfig(cfg.task, cfg.fmt, cfg.max_digits, tok.config())
        run, start = uuid.uuid4().hex[:12], 0  # the run id every later stage copies
    optim = Optim(cfg.steps, cfg.lr, cfg.batch_size, warmup=100, weight_decay=0.1)
    optimizer = optim.optimizer(model)
    lengths = range(1, data.max_digits + cfg.eval_extra + 1)
    check_room(model, tok, eval_problems(data.task, data.fmt, lengths, EVAL_SIZE))
    stream = ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=cfg.seed)
    if cfg.resume:
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        stream.rng.setstate(ckpt["rng"]["stream"])
    print(
        f"smart: {model.num_params() / 1e6:.2f}M parameters, {data.task} ({data.fmt}) "
        f"1..{data.max_digits} digits, {cfg.steps} steps on {device}"
    )
    t0 = time.time()

    def get_batch(step):
        problems = [stream.sample() for _ in range(cfg.batch_size)]
        problems = [noise(p) for p in problems] if noise else problems
        return pack(
            [(encode_prompt(tok, p.prompt), tok.encode(p.completion)) for p in problems], device
        )

    def evaluate(step):
        tqdm.write(f"step {step}: {percents(eval_accuracy(model, tok, data, lengths, EVAL_SIZE))}")
        rng = {"torch": torch.get_rng_state(), "stream": stream.rng.getstate()}
        save_checkpoint(
            path,
            model,
            "smart",
            step,
            data,
            run,
            optimizer=optimizer.state_dict(),
            rng=rng,
            train_cfg=asdict(cfg),
        )

    train_loop(model, get_batch, optim, optimizer, start, cfg.eval_every, evaluate, desc="smart")
    print(f"wrote {path} after {time.time() - t0:.0f}s")


def main(argv=None):
    train(parse_config(TrainConfig, __doc__, argv))


if __name__ == "__main__":
    run_main(main)
