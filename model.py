"""
The one transformer of nanocorrect, hand-rolled: config, attention, MLP, block, model,
a KV cache, batched generation, checkpoint I/O, and (at the bottom) the Llama 3 loader.

Parameter names follow Meta's Llama reference (tok_embeddings, layers.N.attention.wq, ...,
feed_forward.w1/w2/w3, attention_norm, ffn_norm, norm, output) so that Llama weights map onto
this class one to one. The switches in ModelConfig can express both a tiny nanoGPT-style model
(LayerNorm, GELU, learned positions) and a Llama block (RMSNorm, SwiGLU, RoPE, GQA).
"""
import json
import math
import os
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int = 64
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4          # fewer than n_heads = grouped-query attention
    ffn_hidden: int = 512
    mlp: str = "gelu"            # "gelu" (w1, w2) or "swiglu" (w1, w2, w3)
    norm: str = "layernorm"      # "layernorm" or "rmsnorm"
    norm_eps: float = 1e-5
    pos: str = "abacus"          # "learned" | "rope" | "none" | "abacus"
    block_size: int = 512        # longest sequence (learned positions, RoPE tables, generation limit)
    rope_theta: float = 10000.0
    rope_scaling: dict = None    # Llama 3.1 style: factor, low_freq_factor, high_freq_factor, original_max_position_embeddings
    tie_embeddings: bool = False
    # abacus: every digit gets a learned embedding of its index inside its own number (1, 2, ...);
    # other tokens get index 0. Training shifts the indices by a random offset so that indices
    # beyond the trained lengths are trained too (McLeish et al. 2024, "Abacus embeddings").
    digit_lo: int = 0            # token ids digit_lo .. digit_lo+9 are the digits 0..9
    max_digit_index: int = 64    # size of the digit-index table
    abacus_offset: int = 16      # random offset range used while training

    @property
    def head_dim(self):
        return self.dim // self.n_heads


# ----------------------------------------------------------------------------- parts

class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(cfg):
    return RMSNorm(cfg.dim, cfg.norm_eps) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)


def rope_frequencies(cfg):
    """Inverse frequencies of rotary embeddings, with Llama 3.1's scaling of the long wavelengths."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    s = cfg.rope_scaling
    if s:
        factor, lo, hi = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
        old = s.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        smooth = ((old / wavelen) - lo) / (hi - lo)
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)   # long wavelengths: divided by factor
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)          # in between: interpolated
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs (x0,x1), (x2,x3), ... as Meta's reference does. x: (B, H, T, hd)."""
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)


def digit_indices(idx, digit_lo):
    """Index of each digit inside its own run of digits (1, 2, 3, ...), 0 for every other token."""
    d = ((idx >= digit_lo) & (idx < digit_lo + 10)).long()
    c = d.cumsum(-1)
    return (c - torch.cummax(c * (1 - d), dim=-1).values) * d


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, rope, mask, cache, layer):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.insert(layer, k, v)
        if self.n_kv_heads != self.n_heads:   # grouped-query attention: share each k/v head
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)
        if self.swiglu:
            self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)

    def forward(self, x):
        h = F.silu(self.w1(x)) * self.w3(x) if self.swiglu else F.gelu(self.w1(x))
        return self.w2(h)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention_norm, self.attention = make_norm(cfg), Attention(cfg)
        self.ffn_norm, self.feed_forward = make_norm(cfg), FeedForward(cfg)

    def forward(self, x, rope, mask, cache, layer):
        x = x + self.attention(self.attention_norm(x), rope, mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        if cfg.pos == "learned":
            self.pos_embeddings = nn.Embedding(cfg.block_size, cfg.dim)
        if cfg.pos == "abacus":
            self.digit_embeddings = nn.Embedding(cfg.max_digit_index, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        if cfg.pos == "rope":
            self.register_buffer("inv_freq", rope_frequencies(cfg).float(), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def _apply(self, fn, *args, **kw):
        # casting the model (say to bf16) must not round the rope table: rebuild it in fp32
        super()._apply(fn, *args, **kw)
        if self.cfg.pos == "rope":
            self.inv_freq = rope_frequencies(self.cfg).float().to(self.tok_embeddings.weight.device)
        return self

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, positions=None, mask=None, cache=None, digit_index=None):
        """idx (B, T) -> (logits (B, T, V), loss or None). targets use -1 for positions without loss.
        positions: absolute position of each token (default 0..T-1, after the cache's contents);
        mask: boolean attention mask (B, 1, T, T_keys) where padding is involved, else causal;
        digit_index: abacus indices (default computed from idx, which is wrong mid-number only
        when the cache splits a number - generate() passes them in)."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device).expand(B, T)
        if positions.max() >= self.cfg.block_size:
            raise ValueError(f"sequence of {int(positions.max()) + 1} tokens exceeds block_size {self.cfg.block_size}")
        x = self.tok_embeddings(idx)
        rope = None
        if self.cfg.pos == "learned":
            x = x + self.pos_embeddings(positions)
        elif self.cfg.pos == "rope":
            ang = positions[:, None, :, None].float() * self.inv_freq   # (B, 1, T, hd/2)
            rope = (ang.cos(), ang.sin())
        elif self.cfg.pos == "abacus":
            di = digit_indices(idx, self.cfg.digit_lo) if digit_index is None else digit_index
            if di.max() >= self.cfg.max_digit_index:
                raise ValueError(f"a number of {int(di.max())} digits is longer than the model supports "
                                 f"(max_digit_index {self.cfg.max_digit_index})")
            if self.training and self.cfg.abacus_offset > 0:
                # one random shift per sequence, and none for half of them: the low indices that
                # every evaluation uses stay well trained while the high ones get trained too
                shift = torch.randint(0, self.cfg.abacus_offset + 1, (B, 1), device=idx.device)
                shift = shift * (torch.rand(B, 1, device=idx.device) < 0.5)
                di = torch.where(di > 0, di + shift, di)
            x = x + self.digit_embeddings(di.clamp(max=self.cfg.max_digit_index - 1))
        if cache is not None and mask is None and cache.pos > 0:
            mask = torch.ones(B, 1, T, cache.pos + T, dtype=torch.bool, device=idx.device)  # decode: see all
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache, i)
        if cache is not None:
            cache.advance(T)
        logits = self.output(self.norm(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    @classmethod
    def from_llama(cls, path, dtype=torch.float32, **kw):
        model, _ = load_llama(path, dtype=dtype, **kw)
        return model


# ----------------------------------------------------------------------------- generation

class KVCache:
    """Keys and values of every layer for a batch of sequences, filled left to right.
    pos is how many positions are filled; insert() writes one layer's new k/v at pos and returns
    everything up to them; advance() moves pos once all layers have been written."""

    def __init__(self, batch, n_layers, n_kv_heads, max_len, head_dim, device, dtype):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0

    def insert(self, layer, k, v):
        T = k.size(2)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]

    def advance(self, T):
        self.pos += T


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=0.0, top_k=None, stop_id=None,
             num_samples=1, pad_id=0, use_cache=True, generator=None):
    """Batched sampling. prompts: list of token-id lists (any lengths; left-padded here).
    Returns a list (len(prompts) * num_samples, prompt-major) of generated id lists, each cut
    after stop_id (one id or several). temperature 0 = greedy. use_cache=False recomputes the whole prefix each
    step (slow; kept to test the cache against)."""
    stops = [] if stop_id is None else [stop_id] if isinstance(stop_id, int) else list(stop_id)
    was_training = model.training
    model.eval()
    cfg = model.cfg
    dev = next(model.parameters()).device
    prompts = [p for p in prompts for _ in range(num_samples)]
    B, L = len(prompts), max(len(p) for p in prompts)
    if L + max_new_tokens > cfg.block_size:
        raise ValueError(f"prompt of {L} + {max_new_tokens} new tokens exceeds block_size {cfg.block_size}")
    idx = torch.full((B, L), pad_id, dtype=torch.long, device=dev)
    real = torch.zeros(B, L, dtype=torch.bool, device=dev)        # False on left padding
    for i, p in enumerate(prompts):
        idx[i, L - len(p):] = torch.tensor(p, dtype=torch.long)
        real[i, L - len(p):] = True
    digit = digit_indices(idx, cfg.digit_lo) * real
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(B, cfg.n_layers, cfg.n_kv_heads, L + max_new_tokens, cfg.head_dim, dev, dtype)
    out = []
    for step in range(max_new_tokens):
        T = idx.size(1)
        keys = real[:, None, None, :]                               # padding is never attended to
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        if cache is not None and step > 0:   # decode one token: it sees every real key
            logits, _ = model(idx[:, -1:], positions=positions[:, -1:], mask=keys, cache=cache,
                              digit_index=digit[:, -1:])
        else:                                # the whole sequence (prefill, or no cache)
            causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
            mask = (causal & keys) | torch.eye(T, dtype=torch.bool, device=dev)  # a pad sees itself: no empty rows
            logits, _ = model(idx, positions=positions, mask=mask, cache=cache, digit_index=digit)
        logits = logits[:, -1, :].float()
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out.append(nxt)
        if stops:
            done = done | torch.isin(nxt, torch.tensor(stops, device=dev))
        idx = torch.cat([idx, nxt[:, None]], 1)
        real = torch.cat([real, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        is_digit = (nxt >= cfg.digit_lo) & (nxt < cfg.digit_lo + 10)
        # a run of digits the model writes past the table is its own mistake, not bad input: clamp
        digit = torch.cat([digit, ((digit[:, -1] + 1) * is_digit).clamp(max=cfg.max_digit_index - 1)[:, None]], 1)
        if done.all():
            break
    model.train(was_training)
    gen = torch.stack(out, 1).tolist()
    results = []
    for row in gen:
        cut = [i for i, t in enumerate(row) if t in stops]
        if cut:
            row = row[:cut[0] + 1]
        results.append(row)
    return results


# ----------------------------------------------------------------------------- checkpoints

class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable, or from the wrong stage."""


def pick_device(name="auto"):
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def save_checkpoint(path, model, stage, step, data_cfg, optimizer=None, extra=None):
    """A plain dict; written to a temp file and renamed so a crash never leaves half a checkpoint."""
    ckpt = {"model": model.state_dict(), "model_cfg": asdict(model.cfg), "data_cfg": data_cfg,
            "stage": stage, "step": step}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if extra:
        ckpt.update(extra)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, stages=None, device="cpu"):
    """-> (model, ckpt dict). stages: the stages accepted (None = any)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
        cfg = ModelConfig(**ckpt["model_cfg"])
        stage = ckpt["stage"]
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable nanocorrect checkpoint ({type(e).__name__})")
    if stages is not None and stage not in stages:
        raise CheckpointError(f"{path} was written by stage '{stage}', expected one of: {', '.join(stages)}")
    model = GPT(cfg)
    model.load_state_dict(ckpt["model"])
    return model.to(device), ckpt


def fail(msg):
    """The one-line error every script uses for bad input: message on stderr, exit code 2."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


# ----------------------------------------------------------------------------- Llama 3 loader

import glob
import mmap
import re
import time


class LlamaError(ValueError):
    """A Llama 3 directory that is incomplete or inconsistent; the message names what is wrong."""


# Hugging Face's tensor names -> Meta's (= this model's)
_HF_TOP = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
_HF_LAYER = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
             "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
             "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
             "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
             "post_attention_layernorm": "ffn_norm"}
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise LlamaError(f"cannot read {path}: {e}") from None


def llama_rope_factor(from_file, arg, dim, n_layers, source):
    """The rope scaling factor, and a printed line saying why. Meta's params.json for Llama 3.2 1B/3B
    says only use_scaled_rope, and Meta's reference hard-codes 8, but those models were trained with 32."""
    if from_file is not None:
        factor, why = from_file, f"given in {source}"
    elif arg is not None:
        factor, why = arg, "the rope_scaling_factor argument"
    elif (dim, n_layers) in ((2048, 16), (3072, 28)):
        factor, why = 32.0, f"dim {dim} with {n_layers} layers is Llama 3.2 1B/3B, trained with 32"
    else:
        factor, why = 8.0, "Llama 3.1's factor, the default when only use_scaled_rope is given"
    if arg is not None and arg != factor:
        why += f"; the rope_scaling_factor argument {arg:g} is ignored"
    print(f"rope scaling factor {factor:g}: {why}")
    return float(factor)


def _meta_config(p, factor_arg):
    hidden = int(2 * 4 * p["dim"] / 3)                  # Meta's FFN width rule
    if p.get("ffn_dim_multiplier"):
        hidden = int(p["ffn_dim_multiplier"] * hidden)
    m = p.get("multiple_of", 256)
    hidden = m * ((hidden + m - 1) // m)
    scaling = None
    if p.get("use_scaled_rope"):
        factor = llama_rope_factor(p.get("rope_scaling_factor"), factor_arg, p["dim"], p["n_layers"], "params.json")
        scaling = dict(factor=factor, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
    return dict(vocab_size=p["vocab_size"], dim=p["dim"], n_layers=p["n_layers"], n_heads=p["n_heads"],
                n_kv_heads=p.get("n_kv_heads") or p["n_heads"], ffn_hidden=hidden, norm_eps=p.get("norm_eps", 1e-5),
                rope_theta=p.get("rope_theta", 10000.0), rope_scaling=scaling)


def _hf_config(c, factor_arg):
    rp = c.get("rope_parameters") or c.get("rope_scaling") or {}   # transformers >= 5 / older
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind not in ("default", "llama3"):
        raise LlamaError(f"config.json: unknown rope type '{kind}' (this loader knows 'default' and 'llama3')")
    scaling = None
    if kind == "llama3":
        scaling = {k: rp[k] for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
        scaling["factor"] = llama_rope_factor(rp["factor"], factor_arg, c["hidden_size"], c["num_hidden_layers"], "config.json")
    return dict(vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
                n_heads=c["num_attention_heads"], n_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                ffn_hidden=c["intermediate_size"], norm_eps=c.get("rms_norm_eps", 1e-5),
                rope_theta=rp.get("rope_theta", c.get("rope_theta", 10000.0)), rope_scaling=scaling)


def _read_safetensors(path):
    """name -> tensor viewing a private (copy-on-write) memory map of the file. The format: 8-byte
    little-endian header length, a JSON header (dtype, shape, data_offsets per tensor), raw bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or 8 + n > size:
            raise LlamaError(f"{path} is truncated (shorter than its header)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise LlamaError(f"{path}: safetensors header is not valid JSON") from None
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        if h["dtype"] not in _ST_DTYPES:
            raise LlamaError(f"{path}: {name} is {h['dtype']}; only F32, F16, BF16 are supported")
        dt, (a, b) = _ST_DTYPES[h["dtype"]], h["data_offsets"]
        if 8 + n + b > size:
            raise LlamaError(f"{path} is truncated: {name} ends past the end of the file")
        out[name] = torch.frombuffer(buf, dtype=dt, count=(b - a) // dt.itemsize, offset=8 + n + a).view(h["shape"])
    return out


def _hf_tensors(path, n_heads, n_kv_heads):
    index = os.path.join(path, "model.safetensors.index.json")
    wmap = _read_json(index)["weight_map"] if os.path.exists(index) else {}
    files = sorted(set(wmap.values())) or sorted(map(os.path.basename, glob.glob(os.path.join(path, "*.safetensors"))))
    if not files:
        raise LlamaError(f"{path} has config.json but no *.safetensors")
    raw = {}
    for f in files:
        if not os.path.isfile(os.path.join(path, f)):
            raise LlamaError(f"{path}: shard {f} (listed in model.safetensors.index.json) is missing")
        raw.update(_read_safetensors(os.path.join(path, f)))
    sd = {}
    for name, t in raw.items():
        if name.endswith("rotary_emb.inv_freq"):   # some old exports saved the rope table; it is recomputed
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
        new = f"layers.{m[1]}.{_HF_LAYER[m[2]]}.weight" if m and m[2] in _HF_LAYER else _HF_TOP.get(name, name)
        if new.endswith(("wq.weight", "wk.weight")):
            # HF's conversion permuted each head's rows to (x0, x2, ..., x1, x3, ...) so that rotary can
            # rotate half-split pairs; put them back in Meta's interleaved order, which apply_rope expects
            heads = n_heads if new.endswith("wq.weight") else n_kv_heads
            t = t.view(heads, 2, t.shape[0] // heads // 2, t.shape[1]).transpose(1, 2).reshape(t.shape)
        sd[new] = t
    return sd


def _llama_tokenizer(path, tokenizer_path, vocab_size):
    """tokenizer_path, else tokenizer.model in DIR, DIR/original (HF repos) or DIR/..; else None."""
    cands = [tokenizer_path] if tokenizer_path else [os.path.join(path, *d, "tokenizer.model") for d in ((), ("original",), ("..",))]
    found = next((c for c in cands if os.path.isfile(c)), None)
    if found is None:
        if tokenizer_path:
            raise LlamaError(f"no tokenizer at {tokenizer_path}")
        print(f"note: no tokenizer.model in {path}, {path}/original or its parent: no tokenizer (pass tokenizer_path=)")
        return None
    from cot_data import LlamaTokenizer   # here, so that model.py does not need the data module
    try:
        tok = LlamaTokenizer(found)
    except (OSError, ValueError) as e:
        raise LlamaError(f"cannot read tokenizer {found}: {e}") from None
    if tok.vocab_size != vocab_size:
        raise LlamaError(f"tokenizer {found} has {tok.vocab_size} tokens but the weights have {vocab_size}")
    return tok


def load_llama(path, dtype=torch.float32, rope_scaling_factor=None, device="cpu", block_size=8192, tokenizer_path=None):
    """A directory in Meta's layout (params.json, consolidated.00.pth, tokenizer.model) or Hugging
    Face's (config.json, *.safetensors) -> (GPT, LlamaTokenizer or None). Tensors are memory-mapped
    and converted one by one into a model built on the meta device: one full copy in memory, not two."""
    t0 = time.time()
    if os.path.isfile(os.path.join(path, "params.json")):
        layout, source = "meta", "params.json"
    elif os.path.isfile(os.path.join(path, "config.json")):
        layout, source = "hf", "config.json"
    else:
        raise LlamaError(f"{path} has neither params.json (Meta's layout) nor config.json (Hugging Face's)")
    try:
        conf = _read_json(os.path.join(path, source))
        kw = _meta_config(conf, rope_scaling_factor) if layout == "meta" else _hf_config(conf, rope_scaling_factor)
    except KeyError as e:
        raise LlamaError(f"{path}/{source} lacks {e}") from None
    if layout == "meta":
        files = sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))
        if len(files) != 1:
            raise LlamaError(f"{path} holds {len(files)} consolidated.*.pth files; expected exactly one (merge model-parallel shards first)")
        try:
            sd = torch.load(files[0], map_location="cpu", mmap=True, weights_only=True)
        except Exception as e:
            raise LlamaError(f"cannot read {files[0]} ({type(e).__name__})") from None
    else:
        sd = _hf_tensors(path, kw["n_heads"], kw["n_kv_heads"])
    max_pos = conf.get("max_position_embeddings", block_size)
    cfg = ModelConfig(**kw, mlp="swiglu", norm="rmsnorm", pos="rope", block_size=min(block_size, max_pos),
                      tie_embeddings="output.weight" not in sd, digit_lo=kw["vocab_size"])  # no id is a digit
    with torch.device("meta"):   # shapes only: no memory, no random init
        model = GPT(cfg)
    want = {k: v.shape for k, v in model.state_dict().items() if not (cfg.tie_embeddings and k == "output.weight")}
    for k in sorted(set(want) ^ set(sd)):   # the first one, if any
        raise LlamaError(f"{path}: tensor {k} is " + ("missing (Meta's name)" if k in want else "unexpected (not a Llama 3 text model?)"))
    for k, shape in want.items():
        if sd[k].shape != shape:
            raise LlamaError(f"{path}: {k} has shape {tuple(sd[k].shape)} but {source} implies {tuple(shape)}")
    sd = {k: sd[k].to(device=device, dtype=dtype, copy=True) for k in want}
    if cfg.tie_embeddings:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd, assign=True)
    if cfg.tie_embeddings:   # assign=True wrapped the shared tensor in two Parameters: share one again
        model.output.weight = model.tok_embeddings.weight
    model.inv_freq = rope_frequencies(cfg).float().to(device)   # non-persistent buffer, still on meta; fp32 in any dtype
    tok = _llama_tokenizer(path, tokenizer_path, cfg.vocab_size)
    print(f"loaded Llama 3 ({layout} layout) from {path}: {model.num_params():,} parameters, {dtype}, {time.time() - t0:.2f}s")
    return model.eval(), tok
