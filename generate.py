"""
Generation with a KV cache, in three steps as in nanochat's engine:

    1. prefill: every prompt at once, left-padded, writes its keys and values into the cache;
    2. decode: one token a step for every row, attending to the cache;
    3. stop: once every row has written a stop id, or after max_new_tokens.

All buffers (cache, which keys are real, the output) are allocated once, and a decode step waits on
no device-to-host copy: its positions and digit indices are counted on the device, the mask is cut
from one tensor, and whether every row is done is looked at only every STOP_EVERY steps on an
accelerator.
"""

import torch
import torch.nn.functional as F

from model import digit_indices

# On an accelerator done.all() makes the host wait for the GPU, so it is looked at only every
# STOP_EVERY steps. On a CPU it is free and looked at every step: the outputs are the same either
# way (a done row writes padding, cut off), but with temperature > 0 each extra step draws random
# numbers from the generator, which callers share across successive generate() calls; checking
# every step keeps those later samples as they were.
STOP_EVERY = 16


class KVCache:
    """Keys and values of every layer for a batch of sequences, filled left to right: insert()
    writes one layer's new k/v at pos and returns all up to them; advance() moves pos once every
    layer has written."""

    def __init__(self, cfg, batch, max_len, device, dtype):
        shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # (layers, B, nkv, max_len, hs)
        self.v = torch.zeros(shape, device=device, dtype=dtype)  # (layers, B, nkv, max_len, hs)
        self.pos = 0

    def insert(self, layer, k, v):
        end = self.pos + k.size(2)
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, nkv, end, hs) each

    def advance(self, T):
        self.pos += T


def left_pad(prompts, pad_id, device):
    """Token-id lists of any lengths -> ids (B, L) padded on the left, and where they are real."""
    B = len(prompts)
    L = max(len(p) for p in prompts)
    idx = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    real = torch.zeros(B, L, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        idx[i, L - len(p) :] = torch.tensor(p, dtype=torch.long)
        real[i, L - len(p) :] = True
    return idx, real


def prefill_mask(real):
    """Which keys each prompt position may attend to: itself and the real (not padding) positions
    before it. real: (B, L) bool -> (B, 1, L, L); a padding position sees itself."""
    L = real.size(1)
    q = torch.arange(L, device=real.device)[:, None]  # (L, 1)
    k = torch.arange(L, device=real.device)[None, :]  # (1, L)
    return (((k <= q) & real[:, None, :]) | (k == q))[:, None]  # (B, 1, L, L)


def next_token(logits, temperature, top_k, generator):
    """Greedy at temperature 0, else a sample from the (top-k) softmax. logits: (B, V)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, -1), 1, generator=generator).squeeze(-1)  # (B,)


def cut_after_stop(row, stops):
    """A row of generated ids up to and including its first stop id."""
    return row[: next((i + 1 for i, t in enumerate(row) if t in stops), len(row))]


@torch.no_grad()
def generate(
    model,
    prompts,
    max_new_tokens,
    stop_ids=(),
    temperature=0.0,
    top_k=None,
    pad_id=0,
    generator=None,
):
    """Batched generation from token-id lists of any lengths (left-padded here) -> one list of
    generated ids per prompt, each cut after its first stop id; temperature 0 = greedy. For several
    samples of a prompt, repeat it in prompts."""
    cfg = model.cfg
    param = next(model.parameters())
    dev = param.device
    idx, real = left_pad(prompts, pad_id, dev)  # (B, L) each
    B, L = idx.shape
    # the limits, checked once here and never per step
    if L + max_new_tokens > cfg.block_size:
        raise ValueError(
            f"a prompt of {L} tokens and {max_new_tokens} new ones is longer than the model "
            f"supports (block_size {cfg.block_size})"
        )
    digit = digit_indices(idx, cfg.digit_lo) * real  # (B, L) abacus indices, none on padding
    if cfg.abacus and digit.max() >= cfg.max_digit_index:
        raise ValueError(
            f"a number of {int(digit.max())} digits is longer than the model supports "
            f"(max_digit_index {cfg.max_digit_index})"
        )
    was_training = model.training
    model.eval()
    cache = KVCache(cfg, B, L + max_new_tokens, dev, param.dtype)
    # the keys a query may see: the prompts' real tokens, then every generated one
    seen = torch.cat([real, torch.ones(B, max_new_tokens, dtype=torch.bool, device=dev)], 1)
    n_real = real.sum(1)  # (B,) each prompt's length: the position of its first new token
    stops = torch.tensor(list(stop_ids), dtype=torch.long, device=dev)
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    stop_every = 1 if dev.type == "cpu" else STOP_EVERY

    # 1. prefill: the whole prompts; padding counts no positions and sits at position 0
    positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, L)
    logits, _ = model(
        idx, positions=positions, mask=prefill_mask(real), cache=cache, digit_index=digit
    )
    last_digit = digit[:, -1]  # (B,) the index of each row's last token
    for step in range(max_new_tokens):
        # 2. decode: after the first token, the last one alone, against the cache's L + step keys
        if step > 0:
            logits, _ = model(
                out[:, step - 1 : step],  # (B, 1) the token written last step
                positions=(n_real + step - 1)[:, None],  # (B, 1)
                # (B, 1, 1, L + step); a small copy, which attention reads faster than a slice
                mask=seen[:, None, None, : L + step].contiguous(),
                cache=cache,
                digit_index=last_digit[:, None],  # (B, 1)
            )
        nxt = next_token(logits[:, -1, :].float(), temperature, top_k, generator)  # (B,)
        nxt = torch.where(done, pad_id, nxt)  # a row that is done writes padding
        out[:, step] = nxt
        done = done | torch.isin(nxt, stops)
        is_digit = (nxt >= cfg.digit_lo) & (nxt < cfg.digit_lo + 10)
        # a run of digits the model writes past the table is its own mistake, not bad input: clamp
        last_digit = ((last_digit + 1) * is_digit).clamp(max=cfg.max_digit_index - 1)
        # 3. stop: every row has written a stop id (looked at every stop_every steps)
        if (step + 1) % stop_every == 0 and done.all():
            break
    model.train(was_training)
    stop_set = set(stop_ids)
    return [cut_after_stop(row, stop_set) for row in out.tolist()]  # padding after a stop: cut
