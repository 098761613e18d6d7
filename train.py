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

from cli import BadInput, check_writable, opt, parse_config, run_main
from common import (
    DEVICE_HELP,
    GRAD_CLIP,
    Optim,
    autocast,
    check_room,
    encode_prompt,
    eval_accuracy,
    load_checkpoint,
    pack,
    pick_device,
    save_checkpoint,
    tokenizer_from,
    tokens_needed,
)
from cot_data import (
    FORMATS,
    TASKS,
    CharTokenizer,
    DataConfig,
    ProblemStream,
    eval_problems,
    percents,
)
from llama import load_llama
from model import GPT, ROPE_POS, ModelConfig

# the training recipe: AdamW (common.Optim: betas, clipping and the floor of the schedule there)
WARMUP = 100  # steps of linear warmup before the cosine decay
WEIGHT_DECAY = 0.1  # on the weight matrices only
EVAL_SIZE = 100  # evaluation problems per length
LOG_EVERY = 10  # steps between updates of the loss on the progress bar


@dataclass
class TrainConfig:
    out_dir: str = opt("out", "output root; smart is written to OUT_DIR/smart/ckpt.pt")
    task: str = opt("add", "addition, or multiplication by one digit", choices=TASKS)
    fmt: str = opt("reverse", "how chains of thought are written (cot_data.py)", choices=FORMATS)
    max_digits: int = opt(None, "N: trained on 1..N digits; auto: the task's N", lo=1, hi=1000)
    steps: int = opt(None, "optimizer steps; auto: the task's own number", lo=1)
    batch_size: int = opt(64, "problems per step", lo=1, hi=65536)
    lr: float = opt(2e-3, "peak learning rate (then cosine decay to a tenth)", gt=0)
    eval_every: int = opt(900, "evaluate and save every this many steps (0: at the end)", lo=0)
    eval_extra: int = opt(4, "evaluate up to N + this many digits", lo=0)
    seed: int = opt(1337, "random seed of the weights and the data", lo=0)
    device: str = opt("auto", DEVICE_HELP)
    resume: bool = opt(False, "continue OUT_DIR/smart/ckpt.pt up to --steps (all else from it)")
    init_from: str = opt("scratch", "scratch, or llama:DIR to fine-tune Llama 3 weights as smart")
    # the model (ModelConfig in model.py); reverse + abacus is what experiments/sweep.py chose
    dim: int = opt(128, "width of the residual stream", lo=1)
    n_layers: int = opt(4, "transformer blocks", lo=1)
    n_heads: int = opt(4, "attention heads (must divide dim)", lo=1)
    ffn_hidden: int = opt(512, "hidden width of the MLP", lo=1)
    pos: str = opt(
        "abacus",
        "positions (model.py; abacus: a digit's index in its number)",
        choices=("learned", "rope", "none", "abacus", "abacus_rope"),
    )
    abacus_offset: int = opt(20, "abacus: random shift of digit indices in training", lo=0, hi=1000)
    longest: int = opt(
        None,
        "the most digits the model holds: its digit-index table, and (unless --block_size) its "
        "block size; auto: N + eval_extra",
        lo=1,
        hi=1000,
    )

    block_size: int = opt(
        None,
        "longest sequence in tokens; auto: the power of two that holds the learner's correction "
        "prompt of --longest digits with room to answer",
        lo=2,
    )

    def check(self):
        self.max_digits = self.max_digits or TASKS[self.task].max_digits
        self.steps = self.steps or TASKS[self.task].steps
        if self.init_from != "scratch" and not self.init_from.startswith("llama:"):
            raise BadInput(f"--init_from={self.init_from}: use scratch or llama:DIR")
        head = self.dim // self.n_heads
        if self.dim % self.n_heads or (self.pos in ROPE_POS and head % 2):
            raise BadInput(
                f"--n_heads={self.n_heads} must divide --dim={self.dim} "
                "(into an even head size for rope)"
            )
        evaluated = self.max_digits + self.eval_extra
        self.longest = self.longest or evaluated
        if self.longest < evaluated:
            raise BadInput(f"--longest={self.longest}: below N + eval_extra ({evaluated})")
        try:  # a task without that format, or a format that cannot write numbers that long (hints)
            eval_problems(self.task, self.fmt, [self.longest], EVAL_SIZE)
        except ValueError as e:
            raise BadInput(str(e)) from None


def digit_table(longest, offset):
    """Rows of the abacus digit-index table: a power of two (at least the model's default) above
    the longest number (a sum of `longest` digits has one more) shifted by up to `offset`."""
    need = longest + 1 + offset + 1
    return max(ModelConfig.max_digit_index, 2 ** math.ceil(math.log2(need)))


def new_smart(cfg, device):
    """A fresh model and its tokenizer, or Llama 3 weights and theirs."""
    if cfg.init_from.startswith("llama:"):
        path = cfg.init_from[len("llama:") :]
        # every completion ends with '$' (cot_data): generation stops there, as with our tokenizer
        model, tok = load_llama(path, device=device, stop_text="$")
        if tok is None:
            raise BadInput(f"{path} has no tokenizer.model")
        return model, tok
    tok = CharTokenizer()
    need = tokens_needed(tok, eval_problems(cfg.task, cfg.fmt, [cfg.longest], EVAL_SIZE))
    mcfg = ModelConfig(
        vocab_size=tok.vocab_size,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_heads,
        ffn_hidden=cfg.ffn_hidden,
        pos=cfg.pos,
        block_size=cfg.block_size or 2 ** math.ceil(math.log2(need)),
        digit_lo=tok.digit_lo,
        max_digit_index=digit_table(cfg.longest, cfg.abacus_offset),
        abacus_offset=cfg.abacus_offset,
    )
    return GPT(mcfg).to(device), tok


def new_or_resumed(cfg, device, path):
    """-> the model, its tokenizer, DataConfig, the run id, and the checkpoint resumed (None for a
    new run)."""
    if not cfg.resume:
        model, tok = new_smart(cfg, device)
        data = DataConfig(cfg.task, cfg.fmt, cfg.max_digits, tok.config())
        return model, tok, data, uuid.uuid4().hex[:12], None  # the run id every stage copies
    model, ckpt, data = load_checkpoint(path, ["smart"], device)
    if "rng" not in ckpt:
        raise BadInput(f"{path} holds no random state to resume from")
    if cfg.steps <= ckpt["step"]:
        raise BadInput(f"--steps={cfg.steps}: {path} is already at step {ckpt['step']}")
    return model, tokenizer_from(data), data, ckpt["run"], ckpt


def train(cfg, stream=None):
    """Train smart (or resume it) as cfg says, saving OUT_DIR/smart/ckpt.pt at every evaluation.
    stream: where the training problems come from (anything with sample() and rng); by default
    fresh problems of 1..N digits, never an evaluation problem."""
    device = pick_device(cfg.device)
    path = f"{cfg.out_dir}/smart/ckpt.pt"
    check_writable(path)
    torch.manual_seed(cfg.seed)
    model, tok, data, run, ckpt = new_or_resumed(cfg, device, path)
    optim = Optim(cfg.steps, cfg.lr, cfg.batch_size, WARMUP, WEIGHT_DECAY)
    optimizer = optim.optimizer(model)
    lengths = range(1, data.max_digits + cfg.eval_extra + 1)
    check_room(model, tok, eval_problems(data.task, data.fmt, lengths, EVAL_SIZE))
    stream = stream or ProblemStream(data.task, data.fmt, 1, data.max_digits, seed=cfg.seed)
    start = 0
    if ckpt is not None:
        start = ckpt["step"]
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        stream.rng.setstate(ckpt["rng"]["stream"])
    print(
        f"smart: {model.num_params() / 1e6:.2f}M parameters, {data.task} ({data.fmt}) "
        f"1..{data.max_digits} digits, {cfg.steps} steps on {device}"
    )

    def get_batch():
        """batch_size fresh problems, packed end to end: x, y (-1 off the completion), positions,
        and the mask that keeps each problem to itself."""
        problems = [stream.sample() for _ in range(cfg.batch_size)]
        pairs = [(encode_prompt(tok, p.prompt), tok.encode(p.completion)) for p in problems]
        return pack(pairs, device)

    def evaluate_and_save(step):
        tqdm.write(f"step {step}: {percents(eval_accuracy(model, tok, data, lengths, EVAL_SIZE))}")
        rng = {"torch": torch.get_rng_state(), "stream": stream.rng.getstate()}
        extra = dict(optimizer=optimizer.state_dict(), rng=rng, train_cfg=asdict(cfg))
        save_checkpoint(path, model, "smart", step, data, run, extra)

    # the training loop
    amp = autocast(device)  # bf16 on a CUDA GPU, nothing on a CPU
    t0 = time.time()
    tokens = 0
    model.train()
    bar = tqdm(range(start, cfg.steps), desc="smart", initial=start, total=cfg.steps, disable=None)
    for step in bar:
        lr = optim.lr_at(step)  # warmup, then cosine decay
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y, positions, mask = get_batch()
        with amp:
            _, loss = model(x, y, positions=positions, mask=mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        tokens += int((y >= 0).sum())  # the tokens that carry a loss: completions
        if step % LOG_EVERY == 0:
            tok_s = tokens / (time.time() - t0)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", tok_s=f"{tok_s:.0f}")
        if step + 1 == cfg.steps or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            evaluate_and_save(step + 1)
            model.train()
    print(f"wrote {path} after {time.time() - t0:.0f}s")


def main(argv=None):
    train(parse_config(TrainConfig, __doc__, argv))


if __name__ == "__main__":
    run_main(main)
