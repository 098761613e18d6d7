"""
Optional: real Llama 3 weights in nanocorrect's own GPT class, and Llama 3's tokenizer.

    from llama import load_llama
    model, tok = load_llama("Llama-3.2-1B")          # Meta's layout or Hugging Face's

Nothing here is needed for the tiny models; the tokenizer needs tiktoken. This file imports only
torch, the standard library and model, so that any other file may import it.
"""

import glob
import json
import math
import mmap
import os
import re
import time

import torch

from model import GPT, ModelConfig, rope_frequencies


class LlamaError(ValueError):
    """A Llama 3 directory that is incomplete or inconsistent; the message names what is wrong."""


# Hugging Face's tensor names -> Meta's (= this model's)
_HF_TOP = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_REQUIRED = object()
# ModelConfig field: (params.json's name, config.json's name, integer?, default if absent)
_FIELDS = {
    "vocab_size": ("vocab_size", "vocab_size", True, _REQUIRED),
    "dim": ("dim", "hidden_size", True, _REQUIRED),
    "n_layers": ("n_layers", "num_hidden_layers", True, _REQUIRED),
    "n_heads": ("n_heads", "num_attention_heads", True, _REQUIRED),
    "n_kv_heads": ("n_kv_heads", "num_key_value_heads", True, None),  # None: as many as n_heads
    "norm_eps": ("norm_eps", "rms_norm_eps", False, 1e-5),
    "rope_theta": ("rope_theta", "rope_theta", False, 10000.0),
}
# Llama 3.1's scaling, which params.json's use_scaled_rope means (config.json spells it out)
_LLAMA31_ROPE = dict(
    low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192
)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise LlamaError(f"cannot read {path}: {e}") from None


def llama_rope_factor(from_file, arg, dim, n_layers, source):
    """The rope scaling factor, and a printed line saying why. Meta's params.json for Llama 3.2
    1B/3B says only use_scaled_rope and Meta's code hard-codes 8, but they were trained with 32."""
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


def _positive(c, key, source, default=_REQUIRED, integer=True):
    """c[key], checked to be a positive integer (or finite number), or default if it is absent.
    null counts as absent only where the default is None: there it means 'not given'."""
    if key not in c or (c[key] is None and default is None):
        if default is _REQUIRED:
            raise LlamaError(f"{source} lacks {key}")
        return default
    v = c[key]
    kind = "integer" if integer else "number"
    # bool is an int to Python, and 64.0 is not a head count: both are rejected; NaN fails v > 0
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not v > 0:
        raise LlamaError(f"{source}: {key} must be a positive {kind}, not {v!r}")
    if v >= (2**31 if integer else 1e300):  # beyond any model; would overflow shapes or float()
        raise LlamaError(f"{source}: {key} {v} is implausibly large")
    return v if integer else float(v)


def _model_fields(c, meta, factor_arg):
    """params.json (meta) or config.json -> ModelConfig's Llama fields, every one checked alone and
    against the others: a bad value would otherwise fail deep in the model, or give wrong logits."""
    source = "params.json" if meta else "config.json"
    name = {k: v[0 if meta else 1] for k, v in _FIELDS.items()}  # as the user wrote them
    kw = {k: _positive(c, name[k], source, d, i) for k, (_, _, i, d) in _FIELDS.items()}
    kw["n_kv_heads"] = kw["n_kv_heads"] or kw["n_heads"]
    scaling, factor = (_meta_fields if meta else _hf_fields)(c, source, kw)
    if scaling is not None:
        scaling["factor"] = llama_rope_factor(factor, factor_arg, kw["dim"], kw["n_layers"], source)
    kw["rope_scaling"] = scaling
    D, H, KV = name["dim"], name["n_heads"], name["n_kv_heads"]
    dim, n_heads, n_kv_heads = kw["dim"], kw["n_heads"], kw["n_kv_heads"]
    if dim % n_heads:
        raise LlamaError(f"{source}: {D} {dim} is not divisible by {H} {n_heads}")
    # grouped-query attention shares each k/v head among a whole number of heads
    if n_heads % n_kv_heads:
        raise LlamaError(f"{source}: {KV} {n_kv_heads} does not divide {H} {n_heads}")
    hs = dim // n_heads
    if hs % 2:  # rotary embeddings rotate pairs of channels
        raise LlamaError(f"{source}: the head size {D} / {H} = {hs} is odd")
    # this model derives the head size from the two: no other fits
    head_dim = None if meta else c.get("head_dim")
    if head_dim is not None and head_dim != hs:
        raise LlamaError(f"{source}: head_dim {head_dim!r} contradicts {D} / {H} = {hs}")
    if scaling and scaling["high_freq_factor"] <= scaling["low_freq_factor"]:
        # the interpolation divides by their difference
        lo, hi = scaling["low_freq_factor"], scaling["high_freq_factor"]
        raise LlamaError(f"{source}: high_freq_factor {hi} must exceed low_freq_factor {lo}")
    return kw


def _meta_fields(c, source, kw):
    """params.json's FFN width (into kw) -> Llama 3.1's rope scaling (or None), and its factor."""
    hidden = int(2 * 4 * kw["dim"] / 3)  # Meta's FFN width rule
    if mult := _positive(c, "ffn_dim_multiplier", source, None, integer=False):
        hidden = int(mult * hidden)
    m = _positive(c, "multiple_of", source, 256)
    kw["ffn_hidden"] = m * ((hidden + m - 1) // m)
    scaled = c.get("use_scaled_rope", False)
    if not isinstance(scaled, bool):
        raise LlamaError(f"{source}: use_scaled_rope must be true or false, not {scaled!r}")
    factor = _positive(c, "rope_scaling_factor", source, None, integer=False) if scaled else None
    return (dict(_LLAMA31_ROPE) if scaled else None), factor


def _hf_fields(c, source, kw):
    """config.json's FFN width, rope theta (into kw) -> rope scaling (or None), and its factor."""
    kw["ffn_hidden"] = _positive(c, "intermediate_size", source)
    # transformers >= 5 writes rope_parameters, older versions rope_scaling
    key = "rope_parameters" if c.get("rope_parameters") is not None else "rope_scaling"
    rp, rsource = c.get(key) or {}, f"{source} {key}"  # the parameters, and where they are
    if not isinstance(rp, dict):
        raise LlamaError(f"{source}: {key} must be an object, not {rp!r}")
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind not in ("default", "llama3"):
        why = "this loader knows 'default' and 'llama3'"
        raise LlamaError(f"{source}: unknown rope type {kind!r} ({why})")
    theta = _positive(rp, "rope_theta", rsource, None, integer=False)
    kw["rope_theta"] = theta or kw["rope_theta"]
    if kind != "llama3":
        return None, None
    # all three are required here; the defaults' types tell an integer from a number
    ints = {k: type(v) is int for k, v in _LLAMA31_ROPE.items()}
    scaling = {k: _positive(rp, k, rsource, integer=i) for k, i in ints.items()}
    return scaling, _positive(rp, "factor", rsource, integer=False)


def _read_safetensors(path):
    """name -> tensor viewing a private (copy-on-write) memory map of the file. The format: an
    8-byte little-endian header length, a JSON header (dtype, shape, data_offsets), raw bytes."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if size < 8 or 8 + n > size:
            raise LlamaError(f"{path} is truncated (shorter than its header)")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise LlamaError(f"{path}: safetensors header is not valid JSON") from None
        if not isinstance(header, dict):
            raise LlamaError(f"{path}: safetensors header is not a JSON object")
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        try:
            dtype, shape, (a, b) = h["dtype"], h["shape"], h["data_offsets"]
        except (TypeError, KeyError, ValueError):  # not an object, a key missing, not a pair
            need = "dtype, shape and data_offsets [begin, end]"
            raise LlamaError(f"{path}: header entry {name} needs {need}") from None
        if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
            raise LlamaError(f"{path}: {name} is {dtype!r}; only F32, F16, BF16 are supported")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise LlamaError(f"{path}: {name} has shape {shape!r}, not a list of sizes")
        dt = _ST_DTYPES[dtype]
        count = math.prod(shape)
        if type(a) is not int or type(b) is not int or a < 0 or b - a != count * dt.itemsize:
            what = f"{count} {dtype} values"
            raise LlamaError(f"{path}: {name} has data_offsets {[a, b]}, which do not hold {what}")
        if 8 + n + b > size:
            raise LlamaError(f"{path} is truncated: {name} ends past the end of the file")
        empty = torch.empty(0, dtype=dt)  # frombuffer refuses an empty view
        t = torch.frombuffer(buf, dtype=dt, count=count, offset=8 + n + a) if count else empty
        out[name] = t.view(shape)
    return out


def _hf_tensors(path, n_heads, n_kv_heads):
    index = os.path.join(path, "model.safetensors.index.json")
    wmap = _read_json(index) if os.path.exists(index) else {"weight_map": {}}
    wmap = wmap.get("weight_map") if isinstance(wmap, dict) else None
    if not isinstance(wmap, dict) or not all(isinstance(f, str) for f in wmap.values()):
        raise LlamaError(f"{index}: weight_map must be an object of tensor name -> file name")
    files = sorted(set(wmap.values()))
    files = files or sorted(os.path.basename(f) for f in glob.glob(f"{path}/*.safetensors"))
    if not files:
        raise LlamaError(f"{path} has config.json but no *.safetensors")
    raw = {}
    for f in files:
        if not os.path.isfile(os.path.join(path, f)):
            raise LlamaError(f"{path}: shard {f} (listed in {os.path.basename(index)}) is missing")
        raw.update(_read_safetensors(os.path.join(path, f)))
    sd = {}
    for name, t in raw.items():
        if name.endswith("rotary_emb.inv_freq"):  # old exports saved the rope table: recomputed
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.weight", name)
        if m and m[2] in _HF_LAYER:
            name = f"layers.{m[1]}.{_HF_LAYER[m[2]]}.weight"
        name = _HF_TOP.get(name, name)
        heads = n_heads if name.endswith("wq.weight") else n_kv_heads
        qk = name.endswith(("wq.weight", "wk.weight"))
        # HF's conversion permuted each head's rows to (x0, x2, ..., x1, x3, ...) so that rotary
        # rotates half-split pairs; put them back in Meta's interleaved order, as apply_rope
        # expects. A tensor of another shape is left as it is, for load_llama's check to name.
        if qk and t.dim() == 2 and t.shape[0] % (2 * heads) == 0:
            t = t.view(heads, 2, t.shape[0] // heads // 2, -1).transpose(1, 2).reshape(t.shape)
        sd[name] = t
    return sd


def _llama_tokenizer(path, tokenizer_path, vocab_size, stop_text=None):
    """tokenizer_path, else tokenizer.model in DIR, DIR/original (HF repos) or DIR/..; else None."""
    cands = [os.path.join(path, *d, "tokenizer.model") for d in ((), ("original",), ("..",))]
    if tokenizer_path:
        cands = [tokenizer_path]
    found = next((c for c in cands if os.path.isfile(c)), None)
    if found is None:
        if tokenizer_path:
            raise LlamaError(f"no tokenizer at {tokenizer_path}")
        where = f"{path}, {path}/original or {path}/.."
        print(f"note: no tokenizer.model in {where}: no tokenizer (pass tokenizer_path=)")
        return None
    try:
        tok = LlamaTokenizer(found, stop_text)
    except LlamaError:
        raise
    except (OSError, ValueError) as e:
        raise LlamaError(f"cannot read tokenizer {found}: {e}") from None
    if tok.vocab_size != vocab_size:
        n = tok.vocab_size
        raise LlamaError(f"tokenizer {found} has {n} tokens but the weights have {vocab_size}")
    return tok


def _meta_tensors(path):
    """The state dict of Meta's layout: one consolidated.00.pth, memory-mapped."""
    files = sorted(glob.glob(os.path.join(path, "consolidated.*.pth")))
    if len(files) != 1:
        n = len(files)
        raise LlamaError(f"{path} holds {n} consolidated.*.pth, not one (merge the shards)")
    try:
        sd = torch.load(files[0], map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:
        raise LlamaError(f"cannot read {files[0]} ({type(e).__name__})") from None
    if not isinstance(sd, dict):
        raise LlamaError(f"{files[0]} holds a {type(sd).__name__}, not a state dict")
    return sd


def load_llama(
    path,
    dtype=torch.float32,
    rope_scaling_factor=None,
    device="cpu",
    block_size=8192,
    tokenizer_path=None,
    stop_text=None,
):
    """A directory in Meta's layout (params.json, consolidated.00.pth, tokenizer.model) or Hugging
    Face's (config.json, *.safetensors) -> (GPT, LlamaTokenizer or None). Tensors are memory-mapped
    and converted one by one into a model built on the meta device: one copy in memory, not two.
    stop_text: see LlamaTokenizer."""
    t0 = time.time()
    meta = os.path.isfile(os.path.join(path, "params.json"))
    source = "params.json" if meta else "config.json"
    if not os.path.isfile(os.path.join(path, source)):
        raise LlamaError(
            f"{path} has neither params.json (Meta's layout) nor config.json (Hugging Face's)"
        )
    conf = _read_json(os.path.join(path, source))
    if not isinstance(conf, dict):
        raise LlamaError(f"{path}/{source} is not a JSON object")
    kw = _model_fields(conf, meta, rope_scaling_factor)
    sd = _meta_tensors(path) if meta else _hf_tensors(path, kw["n_heads"], kw["n_kv_heads"])
    # checked before building: a model of absurd depth would take forever
    n = len({str(k).split(".")[1] for k in sd if str(k).startswith("layers.")})
    if n != kw["n_layers"]:
        raise LlamaError(f"{path}: {source} says {kw['n_layers']} layers but the weights hold {n}")
    max_pos = _positive(conf, "max_position_embeddings", source, block_size)
    tied = "output.weight" not in sd
    cfg = ModelConfig(**kw, mlp="swiglu", norm="rmsnorm", pos="rope", tie_embeddings=tied)
    cfg.block_size = min(block_size, max_pos)
    cfg.digit_lo = kw["vocab_size"]  # no id is a digit
    with torch.device("meta"):  # shapes only: no memory, no random init
        model = GPT(cfg)
    want = {
        k: v.shape for k, v in model.state_dict().items() if not (tied and k == "output.weight")
    }
    for k in sorted(set(want) ^ set(sd), key=str):  # the first one, if any
        why = "missing (Meta's name)" if k in want else "unexpected (not a Llama 3 text model?)"
        raise LlamaError(f"{path}: tensor {k} is {why}")
    for k, shape in want.items():
        if not isinstance(sd[k], torch.Tensor):
            raise LlamaError(f"{path}: {k} is a {type(sd[k]).__name__}, not a tensor")
        if sd[k].shape != shape:
            got = tuple(sd[k].shape)
            raise LlamaError(f"{path}: {k} has shape {got} but {source} implies {tuple(shape)}")
    sd = {k: sd[k].to(device=device, dtype=dtype, copy=True) for k in want}
    if tied:
        sd["output.weight"] = sd["tok_embeddings.weight"]
    model.load_state_dict(sd, assign=True)
    if tied:  # assign=True wrapped the shared tensor in two Parameters: share one again
        model.output.weight = model.tok_embeddings.weight
    # a non-persistent buffer, still on meta; fp32 whatever the dtype
    model.inv_freq = rope_frequencies(cfg).float().to(device)
    tok = _llama_tokenizer(path, tokenizer_path, cfg.vocab_size, stop_text)
    what = f"Llama 3 ({'meta' if meta else 'hf'} layout) from {path}"
    print(f"loaded {what}: {model.num_params():,} parameters, {dtype}, {time.time() - t0:.2f}s")
    return model.eval(), tok


# ----------------------------------------------------------------------------- tokenizer (tiktoken)


class LlamaTokenizer:
    """Llama 3's tokenizer: byte-level BPE ranks from tokenizer.model (one 'base64-token rank' per
    line) split by Llama 3's regex, then 256 special tokens numbered after the base vocabulary.
    Special-token names are Llama 3.0's; 3.1+ renamed some reserved ones but no id moved.

    Generation stops at the ids in stop_ids: end of text/turn/message. stop_text (nanocorrect's
    "$", which ends every completion) adds every token whose bytes hold it, since BPE may merge
    it with what follows, and decode() cuts the text just after it; stop_id is its own token."""

    PATTERN = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    SPECIAL = (
        ["<|begin_of_text|>", "<|end_of_text|>"]
        + [f"<|reserved_special_token_{i}|>" for i in range(4)]
        + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
        + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)]
    )

    def __init__(self, path, stop_text=None):
        import base64

        import tiktoken

        self.path = os.path.abspath(path)
        self.stop_text = stop_text
        with open(path, "rb") as f:
            lines = (line.split() for line in f if line.strip())
            ranks = {base64.b64decode(tok): int(rank) for tok, rank in lines}
        if sorted(ranks.values()) != list(range(len(ranks))):  # special ids follow: no gaps
            raise ValueError(f"{path}: BPE ranks are not 0..{len(ranks) - 1}")
        self.special = {name: len(ranks) + i for i, name in enumerate(self.SPECIAL)}
        self.enc = tiktoken.Encoding(
            os.path.basename(path),
            pat_str=self.PATTERN,
            mergeable_ranks=ranks,
            special_tokens=self.special,
        )
        self.vocab_size = self.enc.n_vocab
        self.bos_id = self.special["<|begin_of_text|>"]
        self.eos_id = self.special["<|end_of_text|>"]
        self.eot_id = self.special["<|eot_id|>"]
        # id 8 after the base vocabulary is <|eom_id|> (end of message, tool calls) in Llama 3.1+;
        # 3.0 never emits it (reserved), so stopping on it is right for every version.
        self.eom_id = len(ranks) + 8
        self.stop_ids = [self.eos_id, self.eot_id, self.eom_id]
        self.stop_id = self.eos_id  # what a base model ends a text with
        # 3.1+ call this one <|finetune_right_pad_id|>; never a real token, so decode() can drop it
        self.pad_id = len(ranks) + 4
        if stop_text is not None:
            ids = self.encode(stop_text)
            if len(ids) != 1:
                n = len(ids)
                raise LlamaError(f"stop text {stop_text!r} is {n} tokens in {path}, not one")
            self.stop_id = ids[0]
            b = stop_text.encode()
            self.stop_ids = sorted(r for t, r in ranks.items() if b in t) + self.stop_ids

    def encode(self, text, bos=False, eos=False):
        # special-token names inside text are plain text, never control tokens
        ids = self.enc.encode(text, allowed_special=set(), disallowed_special=())
        return [self.bos_id] * bos + ids + [self.eos_id] * eos

    def decode(self, ids):
        text = self.enc.decode([i for i in ids if i != self.pad_id])
        end = text.find(self.stop_text) if self.stop_text else -1
        return text if end < 0 else text[: end + len(self.stop_text)]

    def encode_header(self, role):
        start, end = self.special["<|start_header_id|>"], self.special["<|end_header_id|>"]
        return [start] + self.encode(role) + [end] + self.encode("\n\n")

    def encode_dialog_prompt(self, dialog):
        """[{"role", "content"}, ...] -> ids in Llama 3's chat format, open for the assistant."""
        ids = [self.bos_id]
        for msg in dialog:
            ids += self.encode_header(msg["role"]) + self.encode(msg["content"].strip())
            ids.append(self.eot_id)
        return ids + self.encode_header("assistant")

    def config(self):
        return {"kind": "llama", "path": self.path, "stop_text": self.stop_text}


def tokenizer_from_config(config):
    """The Llama tokenizer a run saved in its checkpoints (LlamaTokenizer.config())."""
    if not os.path.isfile(config["path"]):
        raise LlamaError(f"the run's Llama tokenizer {config['path']} is gone")
    return LlamaTokenizer(config["path"], config.get("stop_text"))
