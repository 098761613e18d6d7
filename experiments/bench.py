"""
How fast is our model against Hugging Face transformers' GPT-2 of the same size? Both are timed in
one process, taking turns (ours, peer, ours, peer, ...), on the same inputs: training tokens/s
(forward, backward, clipping and an AdamW step on batches of the project's addition problems) and
cached generation tokens/s (a batch of prompts, every row writing --new_tokens greedy tokens).

    pip install transformers            # for the benchmark only: not in requirements.txt
    python -m experiments.bench         # the default model, 1 thread; results in docs/bench.md
    python -m experiments.bench --threads=2 --repeats=9 --device=cuda

With --before=DIR it times instead this checkout's generate() against an older checkout's (DIR,
whose model.py still held generate: the code before generate.py), taking turns on the same model,
weights and problems, and checks that both write the same tokens (docs/speed.md):

    git worktree add /tmp/before a91b7b1
    OMP_NUM_THREADS=1 python -m experiments.bench --before=/tmp/before --repeats=3

The peer is GPT2LMHeadModel with our width, depth, heads, MLP width, vocabulary and context, exact
GELU, no dropout and an untied output layer; our model uses learned positions as GPT-2 does. GPT-2
has biases and ours has none, so the peer gets our weights with zero biases: the two compute the
same function, and the run checks that their greedy generations agree before timing anything.
"""

import importlib.util
import os
import platform
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cli import BadInput, opt, parse_config, run_main
from common import GENERATE_BATCH, Optim, max_new_for, pick_device
from cot_data import CharTokenizer, ProblemStream
from generate import generate, left_pad
from model import GPT, ModelConfig
from report import markdown_table


@dataclass
class BenchConfig:
    repeats: int = opt(
        5, "timed rounds, each timing ours then the peer; the median is reported", lo=1
    )
    threads: int = opt(1, "torch CPU threads", lo=1)
    device: str = opt("cpu", "cpu, cuda, cuda:N, mps or auto")
    batch_size: int = opt(
        64, "training sequences per step, and prompts generated for at once", lo=1
    )
    train_steps: int = opt(10, "optimizer steps timed per round and model", lo=1)
    new_tokens: int = opt(128, "tokens every prompt generates (no stop token: all of them)", lo=1)
    dim: int = opt(128, "width of both models", lo=1)
    n_layers: int = opt(4, "layers of both models", lo=1)
    n_heads: int = opt(4, "attention heads of both models (must divide dim)", lo=1)
    ffn_hidden: int = opt(512, "MLP hidden width of both models", lo=1)
    block_size: int = opt(256, "context of both models", lo=2)
    seed: int = opt(0, "seed of the weights and the problems", lo=0)
    before: str = opt(None, "a checkout before generate.py: time its generation against ours")
    digits: str = opt(
        "12,40", "--before: operand lengths of the addition problems, comma-separated"
    )
    problems: int = opt(512, "--before: problems generated for, GENERATE_BATCH at a time", lo=1)

    def check(self):
        if self.dim % self.n_heads:
            raise BadInput(f"n_heads ({self.n_heads}) must divide dim ({self.dim})")


def peer_of(ours):
    """GPT-2 of our model's size, holding our weights (its Conv1D stores them transposed; its biases
    are 0)."""
    from transformers import GPT2Config, GPT2LMHeadModel, logging

    logging.set_verbosity_error()  # its advice to pass an attention mask: right padding needs none
    c = ours.cfg
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.block_size,
            n_embd=c.dim,
            n_layer=c.n_layers,
            n_head=c.n_heads,
            n_inner=c.ffn_hidden,
            activation_function="gelu",
            layer_norm_epsilon=c.norm_eps,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=0,
        )
    )
    sd = {
        "transformer.wte.weight": ours.tok_embeddings.weight,
        "transformer.wpe.weight": ours.pos_embeddings.weight,
        "transformer.ln_f.weight": ours.norm.weight,
        "transformer.ln_f.bias": ours.norm.bias,
        "lm_head.weight": ours.output.weight,
    }
    for i, b in enumerate(ours.layers):
        a, f, h = b.attention, b.feed_forward, f"transformer.h.{i}."
        sd.update(
            {
                h + "ln_1.weight": b.attention_norm.weight,
                h + "ln_1.bias": b.attention_norm.bias,
                h + "ln_2.weight": b.ffn_norm.weight,
                h + "ln_2.bias": b.ffn_norm.bias,
                h + "attn.c_attn.weight": torch.cat([a.wq.weight, a.wk.weight, a.wv.weight]).T,
                h + "attn.c_proj.weight": a.wo.weight.T,
                h + "mlp.c_fc.weight": f.w1.weight.T,
                h + "mlp.c_proj.weight": f.w2.weight.T,
            }
        )
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_(sd[name] if name in sd else torch.zeros_like(p))  # every bias starts at 0
    return hf.to(next(ours.parameters()).device)


def collate(pairs, device):
    """(prompt ids, completion ids) pairs -> x, y, one example a row, right-padded: GPT-2 takes no
    packed rows; the loss is on the completion only (y is -1 elsewhere)."""
    T = max(len(p) + len(c) for p, c in pairs) - 1
    x, y = (
        torch.zeros(len(pairs), T, dtype=torch.long),
        torch.full((len(pairs), T), -1, dtype=torch.long),
    )
    for i, (p, c) in enumerate(pairs):
        seq = torch.tensor(p + c)
        x[i, : len(seq) - 1], y[i, len(p) - 1 : len(seq) - 1] = seq[:-1], seq[len(p) :]
    return x.to(device), y.to(device)


def train(model, batches, optimizer, logits_of):
    """The step of train.py's loop, with the same loss for both models. -> tokens seen."""
    model.train()
    for x, y in batches:
        logits = logits_of(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return sum(x.numel() for x, _ in batches)


def gen_peer(hf, prompts, n):
    hf.eval()
    idx, real = left_pad(prompts, 0, hf.device)  # the same left padding as ours
    with torch.no_grad():
        out = hf.generate(
            input_ids=idx,
            attention_mask=real.long(),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )
    return out[:, idx.size(1) :].tolist()


def timed(device, fn):
    """(seconds, fn's result); waits for the accelerator, whose work is otherwise asynchronous."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else lambda: None
    sync()
    t0 = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - t0, result


def machine(cfg, device, hf):
    """The CPU (and GPU), system and versions; hf None: no transformers (--before)."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")
            ),
            cpu,
        )
    if device.startswith("cuda"):
        cpu += f"; GPU {torch.cuda.get_device_name(device)}"
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    if hf is not None:
        import transformers

        versions += f", transformers {transformers.__version__} "
        versions += f"(attention: {hf.config._attn_implementation})"
    system = f"{os.cpu_count()} cores, {platform.system()} {platform.release()}"
    return f"{cpu}, {system}; {versions}; device {device}, {cfg.threads} thread(s)"


def bench(cfg):
    """-> {"train"/"generate": {"ours"/"peer": median tokens/s, "tokens": per round}, "agree": rows,
    "machine": str}"""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise BadInput("pip install transformers to run the benchmark") from None
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    tok = CharTokenizer()
    ours = GPT(
        ModelConfig(
            vocab_size=tok.vocab_size,
            dim=cfg.dim,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_heads,
            ffn_hidden=cfg.ffn_hidden,
            pos="learned",
            block_size=cfg.block_size,
            digit_lo=tok.digit_lo,
        )
    ).to(device)
    peer = peer_of(ours)
    # the data: batches of addition problems (1..8 digits, loss on the completion) and whole
    # problems as prompts
    stream = ProblemStream("add", "reverse", 1, 8, seed=cfg.seed)
    batches = [
        collate(
            [
                (tok.encode(p.prompt), tok.encode(p.completion))
                for p in (stream.sample() for _ in range(cfg.batch_size))
            ],
            device,
        )
        for _ in range(cfg.train_steps)
    ]
    prompts = [
        tok.encode(p.prompt + p.completion)
        for p in (stream.sample() for _ in range(cfg.batch_size))
    ]
    if max(map(len, prompts)) + cfg.new_tokens > cfg.block_size:
        raise BadInput(
            f"--new_tokens={cfg.new_tokens} does not fit --block_size={cfg.block_size} after the "
            "prompts"
        )
    # the same function: greedy generations must agree (this is the generation warm-up too)
    n = cfg.new_tokens

    def gen_ours():  # no stop id: every row writes n tokens
        return generate(ours, prompts, n, pad_id=0)

    agree = sum(a == b for a, b in zip(gen_ours(), gen_peer(peer, prompts, n)))
    optim = Optim(1800, 2e-3, 64, 100, 0.1)  # train.py's AdamW
    opt_ours, opt_peer = optim.optimizer(ours), optim.optimizer(peer)
    jobs = {
        "train": (
            lambda: train(ours, batches, opt_ours, lambda x: ours(x)[0]),
            lambda: train(peer, batches, opt_peer, lambda x: peer(input_ids=x).logits),
        ),
        "generate": (gen_ours, lambda: gen_peer(peer, prompts, n)),
    }
    for fn in [fn for pair in jobs.values() for fn in pair]:  # warm-up: allocators, kernels, caches
        fn()
    speeds = {k: {"ours": [], "peer": []} for k in jobs}
    counts = {k: {"ours": set(), "peer": set()} for k in jobs}
    for _ in range(cfg.repeats):
        for kind, pair in jobs.items():
            for who, fn in zip(("ours", "peer"), pair):  # alternate: drift hits both alike
                sec, out = timed(device, fn)
                tokens = out if kind == "train" else sum(len(r) for r in out)
                speeds[kind][who].append(tokens / sec)
                counts[kind][who].add(tokens)
    return {
        "machine": machine(cfg, device, peer),
        "agree": agree,
        "prompts": len(prompts),
        **{
            k: {
                "ours": statistics.median(v["ours"]),
                "peer": statistics.median(v["peer"]),
                "ratios": [a / b for a, b in zip(v["ours"], v["peer"])],  # round by round
                "tokens": {w: sorted(c) for w, c in counts[k].items()},
            }
            for k, v in speeds.items()
        },
    }


# ----------------------------------------------------------------------------- before and after


def model_before(path):
    """The model module of another checkout (its model.py), under a name of its own."""
    spec = importlib.util.spec_from_file_location("model_before", os.path.join(path, "model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "generate"):
        raise BadInput(f"--before={path}: its model.py has no generate() (pick an older commit)")
    return module


def gen_before_after(cfg):
    """-> one row per --digits: the seconds of each round before and after, the same greedy
    generation of --problems addition problems (the project's max_new_for and stop id), in chunks
    as common.complete makes them. The weights are random, so rows rarely stop early: both write
    every token, and the run checks that they write the same ones."""
    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    old = model_before(cfg.before)
    tok = CharTokenizer()
    model_cfg = ModelConfig(  # the rest as the project's default model: abacus, context 512
        vocab_size=tok.vocab_size,
        digit_lo=tok.digit_lo,
        dim=cfg.dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=cfg.n_heads,
        ffn_hidden=cfg.ffn_hidden,
    )
    torch.manual_seed(cfg.seed)
    after = GPT(model_cfg).to(device)
    before = old.GPT(model_cfg).to(device)  # the same config: its fields are unchanged
    before.load_state_dict(after.state_dict())
    rows = []
    for digits in map(int, cfg.digits.split(",")):
        stream = ProblemStream("add", "reverse", digits, digits, seed=cfg.seed)
        problems = [stream.sample() for _ in range(cfg.problems)]
        rows.append(time_before_after(cfg, device, problems, old, before, after))
        rows[-1]["digits"] = digits
    return rows


def time_before_after(cfg, device, problems, old, before, after):
    """-> {"new": max new tokens, "tokens": written, "before"/"after": seconds of each round}"""
    tok = CharTokenizer()
    stop = tok.stop_id
    pad = tok.pad_id
    prompts = [tok.encode(p.prompt) for p in problems]
    chunks = [prompts[i : i + GENERATE_BATCH] for i in range(0, len(prompts), GENERATE_BATCH)]
    n = max_new_for(problems)

    def gen_before():
        return [r for c in chunks for r in old.generate(before, c, n, stop_id=stop, pad_id=pad)]

    def gen_after():
        return [r for c in chunks for r in generate(after, c, n, [stop], pad_id=pad)]

    old.generate(before, chunks[0][:8], 4)  # warm-up: allocators, kernels
    generate(after, chunks[0][:8], 4)
    seconds = {"before": [], "after": []}
    outs = []
    for _ in range(cfg.repeats):
        for who, fn in (("before", gen_before), ("after", gen_after)):  # taking turns
            sec, out = timed(device, fn)
            seconds[who].append(sec)
            outs.append(out)
    if any(out != outs[0] for out in outs):
        raise RuntimeError("before and after, generate() wrote different tokens")
    return dict(new=n, tokens=sum(map(len, outs[0])), **seconds)


def main_before_after(cfg):
    rows = gen_before_after(cfg)
    print(f"machine: {machine(cfg, pick_device(cfg.device), None)}")
    print(
        f"greedy generation of {cfg.problems} addition problems, the project's default model "
        f"(dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, abacus), random weights; "
        f"best of {cfg.repeats} rounds, taking turns; same tokens before and after\n"
    )
    table = [
        (
            r["digits"],
            r["new"],
            f"{r['tokens']:,}",
            f"{min(r['before']):.2f}",
            f"{min(r['after']):.2f}",
            f"{min(r['before']) / min(r['after']):.2f}x",
        )
        for r in rows
    ]
    head = ["digits", "max new tokens", "tokens written", "before s", "after s", "before / after"]
    print(markdown_table(head, table))
    for r in rows:  # every round, to show how much the machine drifted
        rounds = {who: " ".join(f"{t:.2f}" for t in r[who]) for who in ("before", "after")}
        print(
            f"{r['digits']} digits, every round: before {rounds['before']}; after {rounds['after']}"
        )
    return rows


def main(argv=None):
    cfg = parse_config(BenchConfig, __doc__, argv)
    if cfg.before:
        return main_before_after(cfg)
    r = bench(cfg)
    print(f"machine: {r['machine']}")
    print(
        f"model: dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads, MLP {cfg.ffn_hidden}, "
        f"vocab {CharTokenizer().vocab_size}, context {cfg.block_size}; batch {cfg.batch_size}, "
        f"{cfg.train_steps} steps and {cfg.new_tokens} new tokens per round, median of "
        f"{cfg.repeats} rounds"
    )
    print(f"greedy generations identical on {r['agree']}/{r['prompts']} prompts\n")
    rows = [
        (
            what,
            f"{r[k]['ours']:,.0f}",
            f"{r[k]['peer']:,.0f}",
            f"{r[k]['ours'] / r[k]['peer']:.2f}x",
            f"{min(r[k]['ratios']):.2f}-{max(r[k]['ratios']):.2f}x",
            goal,
        )
        for k, what, goal in (
            ("train", "training tokens/s", ">= 1.2x"),
            ("generate", "cached generation tokens/s", ">= 2x"),
        )
    ]
    print(
        markdown_table(
            ["", "ours", "GPT-2 (transformers)", "ratio of medians", "ratio per round", "goal"],
            rows,
        )
    )
    return r


if __name__ == "__main__":
    run_main(main)
