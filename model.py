"""
The one transformer of nanocorrect, hand-rolled: config, attention, MLP, block and GPT, whose
forward reads top to bottom; the position signals (learned, RoPE, abacus) come last, for a reader
to skip. Generation with a KV cache is in generate.py, training batches in common.py.
Parameter names follow Meta's Llama reference (tok_embeddings, layers.N.attention.wq, ...), so
Llama weights map onto it one to one (llama.py); ModelConfig's switches give a tiny nanoGPT-style
model (LayerNorm, GELU, learned positions) or a Llama block (RMSNorm, SwiGLU, RoPE, grouped-query
attention).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# the position kinds that use each signal; abacus_rope uses both (RoPE: which number a digit is in)
ABACUS_POS = ("abacus", "abacus_rope")
ROPE_POS = ("rope", "abacus_rope")


@dataclass
class ModelConfig:
    vocab_size: int = 64
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 4  # fewer than n_heads = grouped-query attention
    ffn_hidden: int = 512
    mlp: str = "gelu"  # "gelu" (w1, w2) or "swiglu" (w1, w2, w3)
    norm: str = "layernorm"  # "layernorm" or "rmsnorm"
    norm_eps: float = 1e-5
    pos: str = "abacus"  # "learned" | "rope" | "none" | "abacus" | "abacus_rope" (both)
    block_size: int = 512  # longest sequence (learned positions, RoPE tables, generation limit)
    rope_theta: float = 10000.0
    rope_scaling: dict = None  # Llama 3.1's: factor, low/high_freq_factor, original context
    tie_embeddings: bool = False
    # abacus: each digit gets a learned embedding of its index in its own number (1, 2, ...; other
    # tokens 0), shifted in training by a random offset so that indices past the trained lengths
    # are trained too (McLeish et al. 2024, "Abacus embeddings")
    digit_lo: int = 0  # token ids digit_lo .. digit_lo+9 are the digits 0..9
    max_digit_index: int = 64  # size of the digit-index table
    abacus_offset: int = 20  # random offset range used while training

    @property
    def head_dim(self):
        return self.dim // self.n_heads

    @property
    def abacus(self):
        return self.pos in ABACUS_POS

    @property
    def rope(self):
        return self.pos in ROPE_POS


# ----------------------------------------------------------------------------- the transformer


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()  # the mean of squares in fp32 whatever the model's dtype
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def make_norm(cfg):
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.dim, cfg.norm_eps)
    return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_kv_heads
        self.head_dim = cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, rope, mask, cache, layer):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)  # (B, T, nh, hs)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, nkv, hs)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)  # (B, T, nkv, hs)
        q = q.transpose(1, 2)  # (B, nh, T, hs)
        k = k.transpose(1, 2)  # (B, nkv, T, hs)
        v = v.transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:
            q = apply_rope(q, *rope)
            k = apply_rope(k, *rope)
        if cache is not None:  # the keys and values of every token so far, these included
            k, v = cache.insert(layer, k, v)  # (B, nkv, Tk, hs), Tk = cache start + T
        if self.n_kv_heads != self.n_heads:  # grouped-query attention: share each k/v head
            rep = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(rep, dim=1)  # (B, nh, Tk, hs)
            v = v.repeat_interleave(rep, dim=1)  # (B, nh, Tk, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        y = y.transpose(1, 2).reshape(B, T, -1)  # (B, nh, T, hs) -> (B, T, nh * hs)
        return self.wo(y)


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
        self.attention_norm = make_norm(cfg)
        self.attention = Attention(cfg)
        self.ffn_norm = make_norm(cfg)
        self.feed_forward = FeedForward(cfg)

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
        if cfg.abacus:
            self.digit_embeddings = nn.Embedding(cfg.max_digit_index, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        if cfg.rope:
            self.register_buffer("inv_freq", rope_frequencies(cfg).float(), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def _apply(self, fn, *args, **kw):
        # casting the model (say to bf16) must not round the rope table: rebuild it in fp32
        super()._apply(fn, *args, **kw)
        if self.cfg.rope:
            self.inv_freq = rope_frequencies(self.cfg).float().to(self.tok_embeddings.weight.device)
        return self

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, positions=None, mask=None, cache=None, digit_index=None):
        """idx (B, T) -> (logits (B, T, V), loss or None); targets are -1 where there is no loss.
        positions: each token's position in its own sequence (default: 0..T-1 after the cache's; a
        packed row holds several sequences); mask: boolean (B, 1, T, T_keys) for padding or packing,
        else causal (needed past a cache's start); cache: generate.py's KVCache; digit_index: abacus
        indices (computed from idx unless given: generate's cache splits numbers)."""
        B, T = idx.shape
        start = 0 if cache is None else cache.pos
        # host ints, no device sync: positions are below start + T (packed ones below T)
        if start + T > self.cfg.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds block_size {self.cfg.block_size}"
            )
        if start > 0 and mask is None:
            raise ValueError("past the start of a cache, the mask must say which keys to attend")
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device).expand(B, T)  # (B, T)
        x = self.tok_embeddings(idx)  # (B, T, dim)
        x, rope = self.position_signal(x, idx, positions, digit_index)
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache, i)
        if cache is not None:
            cache.advance(T)
        logits = self.output(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits, None
        flat = logits.float().view(-1, logits.size(-1))  # (B * T, V)
        return logits, F.cross_entropy(flat, targets.view(-1), ignore_index=-1)  # targets (B * T,)

    # ------------------------------------------------------------------------- position signals

    def position_signal(self, x, idx, positions, digit_index):
        """-> (x plus the learned or abacus embeddings, RoPE's (cos, sin) or None)."""
        rope = None
        if self.cfg.pos == "learned":
            x = x + self.pos_embeddings(positions)  # (B, T, dim)
        if self.cfg.rope:
            ang = positions[:, None, :, None].float() * self.inv_freq  # (B, 1, T, hs/2)
            rope = (ang.cos(), ang.sin())
        if self.cfg.abacus:
            di = self.abacus_index(idx, positions, digit_index)
            x = x + self.digit_embeddings(di)  # (B, T, dim)
        return x, rope

    def abacus_index(self, idx, positions, digit_index):
        """Each digit's index in its own number (B, T); in training, shifted at random."""
        cfg = self.cfg
        starts = positions == 0  # a sequence starts at position 0 (a packed row holds several)
        di = digit_index
        if di is None:
            di = digit_indices(idx, cfg.digit_lo, starts)
            if di.max() >= cfg.max_digit_index:
                raise ValueError(
                    f"a number of {int(di.max())} digits is longer than the model supports "
                    f"(max_digit_index {cfg.max_digit_index})"
                )
        if self.training and cfg.abacus_offset > 0:
            # one random shift per sequence, and none for half of them: the low indices that
            # every evaluation uses stay well trained while the high ones get trained too
            seq = starts.long().cumsum(-1).clamp(min=1) - 1  # (B, T): which sequence of its row
            B = idx.size(0)
            S = int(seq.max()) + 1
            shift = torch.randint(0, cfg.abacus_offset + 1, (B, S), device=idx.device)
            shift = (shift * (torch.rand(B, S, device=idx.device) < 0.5)).gather(1, seq)  # (B, T)
            di = torch.where(di > 0, di + shift, di)
        return di.clamp(max=cfg.max_digit_index - 1)


def digit_indices(idx, digit_lo, starts=False):
    """Index of each digit inside its own run of digits (1, 2, 3, ...), 0 for every other token.
    starts (bool, like idx): where a sequence begins, which also begins a run (packed rows)."""
    d = ((idx >= digit_lo) & (idx < digit_lo + 10)).long()
    c = d.cumsum(-1)
    run_start = torch.where((d == 0) | starts, c - d, 0)  # the count just before each run
    return (c - torch.cummax(run_start, dim=-1).values) * d


def rope_frequencies(cfg):
    """Inverse frequencies of rotary embeddings, with Llama 3.1's scaling of long wavelengths."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    s = cfg.rope_scaling
    if s:
        factor = s["factor"]
        lo, hi = s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
        old = s.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        smooth = ((old / wavelen) - lo) / (hi - lo)
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)  # long: divided by factor
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)  # in between: interpolated
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs (x0,x1), (x2,x3), ... as Meta's reference does; x: (B, H, T, hd)."""
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]  # (B, H, T, hd/2) each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, hd/2, 2)
    return out.flatten(-2).type_as(x)  # (B, H, T, hd)
