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
from dataclasses import dataclass, asdict, field

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
        if positions.max() >= self.cfg.block_size and self.cfg.pos in ("learned", "rope"):
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
            if self.training and self.cfg.abacus_offset > 0:   # same random shift for a whole sequence
                shift = torch.randint(0, self.cfg.abacus_offset + 1, (B, 1), device=idx.device)
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
    after stop_id. temperature 0 = greedy. use_cache=False recomputes the whole prefix each
    step (slow; kept to test the cache against)."""
    was_training = model.training
    model.eval()
    cfg = model.cfg
    dev = next(model.parameters()).device
    prompts = [p for p in prompts for _ in range(num_samples)]
    B, L = len(prompts), max(len(p) for p in prompts)
    if L + max_new_tokens > cfg.block_size and cfg.pos in ("learned", "rope"):
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
        causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril()
        mask = (causal & keys) | torch.eye(T, dtype=torch.bool, device=dev)  # a pad sees itself: no empty rows
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        if cache is None:
            logits, _ = model(idx, positions=positions, mask=mask, digit_index=digit)
        elif step == 0:   # prefill
            logits, _ = model(idx, positions=positions, mask=mask, cache=cache, digit_index=digit)
        else:             # decode one token
            logits, _ = model(idx[:, -1:], positions=positions[:, -1:], mask=mask[:, :, -1:],
                              cache=cache, digit_index=digit[:, -1:])
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
        if stop_id is not None:
            done = done | (nxt == stop_id)
        idx = torch.cat([idx, nxt[:, None]], 1)
        real = torch.cat([real, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        is_digit = (nxt >= cfg.digit_lo) & (nxt < cfg.digit_lo + 10)
        digit = torch.cat([digit, ((digit[:, -1] + 1) * is_digit)[:, None]], 1)
        if done.all():
            break
    model.train(was_training)
    gen = torch.stack(out, 1).tolist()
    results = []
    for row in gen:
        if stop_id is not None and stop_id in row:
            row = row[:row.index(stop_id) + 1]
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
