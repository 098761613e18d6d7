"""
The one transformer of nanocorrect, hand-rolled: config, attention, MLP, block, model; then the
batches it reads (packed for training, left-padded for generation) and generation with a KV cache.
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
ABACUS_POS, ROPE_POS = ("abacus", "abacus_rope"), ("rope", "abacus_rope")


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


# ----------------------------------------------------------------------------- parts


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(
            x
        ) * self.weight


def make_norm(cfg):
    return (
        RMSNorm(cfg.dim, cfg.norm_eps)
        if cfg.norm == "rmsnorm"
        else nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
    )


def rope_frequencies(cfg):
    """Inverse frequencies of rotary embeddings, with Llama 3.1's scaling of long wavelengths."""
    hd = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    s = cfg.rope_scaling
    if s:
        factor, lo, hi = s["factor"], s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
        old = s.get("original_max_position_embeddings", 8192)
        wavelen = 2 * math.pi / inv
        smooth = ((old / wavelen) - lo) / (hi - lo)
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)  # long: divided by factor
        mid = (wavelen <= old / lo) & (wavelen >= old / hi)  # in between: interpolated
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    return inv


def apply_rope(x, cos, sin):
    """Rotate interleaved pairs (x0,x1), (x2,x3), ... as Meta's reference does; x: (B, H, T, hd)."""
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)


def digit_indices(idx, digit_lo, starts=False):
    """Index of each digit inside its own run of digits (1, 2, 3, ...), 0 for every other token.
    starts (bool, like idx): where a sequence begins, which also begins a run (packed rows)."""
    d = ((idx >= digit_lo) & (idx < digit_lo + 10)).long()
    c = d.cumsum(-1)
    run_start = torch.where((d == 0) | starts, c - d, 0)  # the count just before each run
    return (c - torch.cummax(run_start, dim=-1).values) * d


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
        if self.n_kv_heads != self.n_heads:  # grouped-query attention: share each k/v head
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
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
        else causal; digit_index: abacus indices (computed from idx unless generate(), whose cache
        splits numbers, gives them)."""
        B, T = idx.shape
        start = cache.pos if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=idx.device).expand(B, T)
        if positions.max() >= self.cfg.block_size:
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} tokens exceeds "
                f"block_size {self.cfg.block_size}"
            )
        x = self.tok_embeddings(idx)
        rope = None
        if self.cfg.pos == "learned":
            x = x + self.pos_embeddings(positions)
        if self.cfg.rope:
            ang = positions[:, None, :, None].float() * self.inv_freq  # (B, 1, T, hd/2)
            rope = (ang.cos(), ang.sin())
        if self.cfg.abacus:
            starts = positions == 0  # a sequence starts at position 0 (a packed row holds several)
            di = (
                digit_indices(idx, self.cfg.digit_lo, starts)
                if digit_index is None
                else digit_index
            )
            if di.max() >= self.cfg.max_digit_index:
                raise ValueError(
                    f"a number of {int(di.max())} digits is longer than the model supports "
                    f"(max_digit_index {self.cfg.max_digit_index})"
                )
            if self.training and self.cfg.abacus_offset > 0:
                # one random shift per sequence, and none for half of them: the low indices that
                # every evaluation uses stay well trained while the high ones get trained too
                seq = starts.long().cumsum(-1).clamp(min=1) - 1
                S = int(seq.max()) + 1
                shift = torch.randint(0, self.cfg.abacus_offset + 1, (B, S), device=idx.device)
                shift = (shift * (torch.rand(B, S, device=idx.device) < 0.5)).gather(1, seq)
                di = torch.where(di > 0, di + shift, di)
            x = x + self.digit_embeddings(di.clamp(max=self.cfg.max_digit_index - 1))
        if (
            cache is not None and mask is None and cache.pos > 0
        ):  # no padding: causal over cache + new
            mask = attention_mask(
                torch.ones(B, cache.pos + T, dtype=torch.bool, device=idx.device), T
            )
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, cache, i)
        if cache is not None:
            cache.advance(T)
        logits = self.output(self.norm(x))
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1
        )


# ----------------------------------------------------------------------------- generation


class KVCache:
    """Keys and values of every layer for a batch of sequences, filled left to right: insert()
    writes one layer's new k/v at pos and returns all up to them; advance() moves pos once every
    layer has written."""

    def __init__(self, batch, n_layers, n_kv_heads, max_len, head_dim, device, dtype):
        shape = (n_layers, batch, n_kv_heads, max_len, head_dim)
        self.k, self.v = (torch.zeros(shape, device=device, dtype=dtype) for _ in range(2))
        self.pos = 0

    def insert(self, layer, k, v):
        T = k.size(2)
        self.k[layer, :, :, self.pos : self.pos + T] = k
        self.v[layer, :, :, self.pos : self.pos + T] = v
        return self.k[layer, :, :, : self.pos + T], self.v[layer, :, :, : self.pos + T]

    def advance(self, T):
        self.pos += T


def attention_mask(real, n_new):
    """Which keys each of the last n_new positions may attend to: itself and the real (not padding)
    positions before it. real: (B, T) bool -> (B, 1, n_new, T); a padding position sees itself."""
    T = real.size(1)
    q = torch.arange(T - n_new, T, device=real.device)[:, None]
    k = torch.arange(T, device=real.device)[None, :]
    return (((k <= q) & real[:, None, :]) | (k == q))[:, None]


def left_pad(prompts, pad_id, device):
    """Token-id lists of any lengths -> ids (B, L) padded on the left, and where they are real."""
    B, L = len(prompts), max(len(p) for p in prompts)
    idx = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    real = torch.zeros(B, L, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        idx[i, L - len(p) :] = torch.tensor(p, dtype=torch.long)
        real[i, L - len(p) :] = True
    return idx, real


def next_token(logits, temperature, top_k, generator):
    """Greedy at temperature 0, else a sample from the (top-k) softmax. logits: (B, V)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    prompts,
    max_new_tokens,
    temperature=0.0,
    top_k=None,
    stop_id=None,
    num_samples=1,
    pad_id=0,
    use_cache=True,
    generator=None,
):
    """Batched sampling from token-id lists of any lengths (left-padded here) -> generated id
    lists, prompt-major, each cut after stop_id (one id or several); temperature 0 = greedy.
    use_cache=False recomputes the whole prefix each step (slow; kept to test the cache against)."""
    stops = [] if stop_id is None else [stop_id] if isinstance(stop_id, int) else list(stop_id)
    was_training, cfg, dev = model.training, model.cfg, next(model.parameters()).device
    model.eval()
    idx, real = left_pad([p for p in prompts for _ in range(num_samples)], pad_id, dev)
    B, L = idx.shape
    if L + max_new_tokens > cfg.block_size:
        raise ValueError(
            f"a prompt of {L} tokens and {max_new_tokens} new ones is longer than the model "
            f"supports (block_size {cfg.block_size})"
        )
    digit = digit_indices(idx, cfg.digit_lo) * real  # abacus indices, none on padding
    dtype = next(model.parameters()).dtype
    shape = dict(n_layers=cfg.n_layers, n_kv_heads=cfg.n_kv_heads, head_dim=cfg.head_dim)
    cache = None
    if use_cache:  # else the whole prefix is recomputed each step
        cache = KVCache(B, max_len=L + max_new_tokens, device=dev, dtype=dtype, **shape)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    out = []
    for step in range(max_new_tokens):
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # padding does not count
        n_new = 1 if cache is not None and step > 0 else idx.size(1)  # decode one token, or prefill
        new = dict(positions=positions[:, -n_new:], digit_index=digit[:, -n_new:])
        logits, _ = model(idx[:, -n_new:], mask=attention_mask(real, n_new), cache=cache, **new)
        nxt = next_token(logits[:, -1, :].float(), temperature, top_k, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out.append(nxt)
        done = done | torch.isin(nxt, torch.tensor(stops, dtype=torch.long, device=dev))
        idx = torch.cat([idx, nxt[:, None]], 1)
        real = torch.cat([real, torch.ones(B, 1, dtype=torch.bool, device=dev)], 1)
        is_digit = (nxt >= cfg.digit_lo) & (nxt < cfg.digit_lo + 10)
        # a run of digits the model writes past the table is its own mistake, not bad input: clamp
        index = ((digit[:, -1] + 1) * is_digit).clamp(max=cfg.max_digit_index - 1)
        digit = torch.cat([digit, index[:, None]], 1)
        if done.all():
            break
    model.train(was_training)
    rows = torch.stack(out, 1).tolist()  # each up to and including its first stop id
    return [r[: next((i + 1 for i, t in enumerate(r) if t in stops), len(r))] for r in rows]
