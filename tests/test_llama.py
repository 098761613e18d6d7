"""The Llama 3 loader and tokenizer against ../shared/llama_tiny: a tiny random Llama 3.1-style
checkpoint in Meta's and Hugging Face's layouts, with logits and tokens from reference code."""

import base64
import json
import os
import re
import shutil

import pytest
import torch

from generate import generate
from llama import (
    LlamaError,
    LlamaTokenizer,
    _read_safetensors,
    llama_rope_factor,
    load_llama,
    tokenizer_from_config,
)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "llama_tiny")
pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHARED), reason=f"no Llama oracle data at {SHARED}"
)


def shared(*parts):
    return os.path.join(SHARED, *parts)


@pytest.fixture(scope="module")
def ref():
    return torch.load(shared("reference_logits.pt"), weights_only=True)


@pytest.fixture(scope="module", params=["meta", "hf"])
def loaded(request):
    model, tok = load_llama(shared(request.param))
    return request.param, model, tok


def copy_dir(src, dst, skip=()):
    """A writable copy (the shared files are read-only, and copytree would keep that)."""
    os.makedirs(dst)
    for f in os.listdir(src):
        if f not in skip:
            shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
    return str(dst)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        b = t.float().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(b)],
        }
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def logits(model, ids):
    with torch.no_grad():
        return model(ids)[0]


# ----------------------------------------------------------------------------- against the oracle


def test_logits_match_reference(loaded, ref):
    layout, model, _ = loaded
    want = ref["logits_meta"] if layout == "meta" else ref["logits_hf"]
    assert (logits(model, ref["input_ids"]) - want).abs().max().item() <= 1e-4


def test_greedy_with_kv_cache_matches_reference(loaded, ref):
    _, model, _ = loaded
    out = generate(model, [ref["greedy_prompt"].tolist()], max_new_tokens=24, temperature=0)
    assert out[0] == ref["greedy_hf"].tolist()


def test_model_config(loaded):
    layout, model, tok = loaded
    cfg = model.cfg
    assert (cfg.pos, cfg.norm, cfg.mlp, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_hidden) == (
        "rope",
        "rmsnorm",
        "swiglu",
        4,
        2,
        224,
    )
    assert cfg.rope_scaling["factor"] == 8 and cfg.rope_theta == 500000 and not cfg.tie_embeddings
    assert tok is not None and tok.vocab_size == cfg.vocab_size == 600  # hf/: from the parent dir


def test_bf16(ref):
    model, _ = load_llama(shared("meta"), dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.inv_freq.dtype == torch.float32  # the rope table keeps its precision
    out = logits(model, ref["input_ids"])
    assert out.dtype == torch.bfloat16 and (out.float() - ref["logits_meta"]).abs().max() < 0.1


def test_sharded_safetensors_and_tied_embeddings(tmp_path, ref):
    raw = _read_safetensors(shared("hf", "model.safetensors"))
    d = copy_dir(shared("hf"), tmp_path / "sharded", skip=("model.safetensors",))
    names = sorted(raw)
    shards = {
        "model-00001-of-00002.safetensors": names[:7],
        "model-00002-of-00002.safetensors": names[7:],
    }
    for f, ns in shards.items():
        write_safetensors(os.path.join(d, f), {n: raw[n] for n in ns})
    write_json(
        os.path.join(d, "model.safetensors.index.json"),
        {"weight_map": {n: f for f, ns in shards.items() for n in ns}},
    )
    model, tok = load_llama(d, tokenizer_path=shared("tokenizer.model"))
    assert (logits(model, ref["input_ids"]) - ref["logits_hf"]).abs().max().item() <= 1e-4
    # no lm_head: the output layer shares the embedding
    t = copy_dir(shared("hf"), tmp_path / "tied", skip=("model.safetensors",))
    write_safetensors(
        os.path.join(t, "model.safetensors"),
        {n: v for n, v in raw.items() if n != "lm_head.weight"},
    )
    tied, tok = load_llama(t)
    assert tok is None  # no tokenizer.model anywhere near: a note, no error
    assert tied.cfg.tie_embeddings and tied.output.weight is tied.tok_embeddings.weight
    assert tied.num_params() == model.num_params() - 600 * 64


def test_rope_factor_choice(tmp_path, capsys):
    assert llama_rope_factor(None, None, 2048, 16, "params.json") == 32  # Llama 3.2 1B
    assert llama_rope_factor(None, None, 3072, 28, "params.json") == 32  # Llama 3.2 3B
    assert llama_rope_factor(None, None, 4096, 32, "params.json") == 8  # Llama 3.1 8B
    assert (
        llama_rope_factor(None, 16, 2048, 16, "params.json") == 16
    )  # the argument beats the guess
    assert llama_rope_factor(4, 16, 2048, 16, "params.json") == 4  # the file beats the argument
    assert "Llama 3.2" in capsys.readouterr().out
    d = copy_dir(shared("meta"), tmp_path / "m")
    write_json(
        os.path.join(d, "params.json"),
        {**read_json(os.path.join(d, "params.json")), "rope_scaling_factor": 32},
    )
    assert load_llama(d)[0].cfg.rope_scaling["factor"] == 32


# ----------------------------------------------------------------------------- tokenizer


def test_tokenizer_reproduces_meta_ids(loaded):
    tok = loaded[2]
    exp = read_json(shared("tokenizer_expected.json"))
    assert (tok.bos_id, tok.eos_id, tok.eot_id, tok.vocab_size) == (
        exp["bos_id"],
        exp["eos_id"],
        exp["eot_id"],
        exp["n_words"],
    )
    for case in exp["cases"]:
        ids = tok.encode(case["text"], bos=case["bos"], eos=case["eos"])
        assert ids == case["ids"], case["text"]
        assert tok.decode(tok.encode(case["text"])) == case["text"]
    assert tok.encode_dialog_prompt(exp["chat_dialog"]) == exp["chat_ids"]
    assert (
        tok.stop_id in tok.stop_ids
        and tok.eot_id in tok.stop_ids
        and tok.pad_id not in tok.stop_ids
    )
    assert tok.decode([tok.pad_id, *tok.encode("ok"), tok.pad_id]) == "ok"
    assert LlamaTokenizer(**{k: v for k, v in tok.config().items() if k != "kind"}).encode(
        "Q:1+1="
    ) == tok.encode("Q:1+1=")


def test_tokenizer_stop_text(tmp_path):
    """stop_text="$" (nanocorrect's end of a completion) stops generation and cuts decode()."""
    plain = LlamaTokenizer(shared("tokenizer.model"))
    tok = LlamaTokenizer(shared("tokenizer.model"), stop_text="$")
    (dollar,) = plain.encode("$")  # one token
    assert tok.stop_id == dollar and plain.stop_id == plain.eos_id
    assert plain.stop_ids == [plain.eos_id, plain.eot_id, plain.eom_id]  # unchanged without it
    assert tok.stop_ids == [dollar, tok.eos_id, tok.eot_id, tok.eom_id]
    prompt, completion = tok.encode("12+34="), tok.encode("01;#64$")
    assert completion[-1] == dollar and tok.decode(completion) == "01;#64$"
    assert tok.decode(prompt + completion) == "12+34=01;#64$"
    assert tok.decode(completion + tok.encode(".99$7")) == "01;#64$"  # cut just after the first $
    assert plain.decode(completion + tok.encode(".9")) == "01;#64$.9"
    assert tok.config() == {"kind": "llama", "path": tok.path, "stop_text": "$"}
    again = tokenizer_from_config(tok.config())
    assert (again.stop_id, again.stop_ids, again.decode(completion + [dollar])) == (
        tok.stop_id,
        tok.stop_ids,
        "01;#64$",
    )
    old = tokenizer_from_config({"kind": "llama", "path": plain.path})  # saved before stop_text
    assert old.stop_text is None and old.stop_ids == plain.stop_ids
    # a vocabulary where BPE merges "$." into one token: that token stops generation too
    with open(shared("tokenizer.model"), "rb") as f:
        ranks = f.read()
    path = tmp_path / "merged.model"
    path.write_bytes(ranks + base64.b64encode(b"$.") + b" 344\n")
    merged = LlamaTokenizer(str(path), stop_text="$")
    ids = merged.encode("64$.5")
    assert 344 in ids and 344 in merged.stop_ids and merged.stop_id == dollar
    assert merged.decode(ids) == "64$"
    with pytest.raises(LlamaError, match="stop text '#6' is 2 tokens"):
        LlamaTokenizer(shared("tokenizer.model"), stop_text="#6")


def test_load_llama_stop_text():
    _, tok = load_llama(shared("meta"), stop_text="$")
    assert tok.config()["stop_text"] == "$" and tok.stop_id == tok.encode("$")[0]
    with pytest.raises(LlamaError, match="is 2 tokens"):
        load_llama(shared("meta"), stop_text="$$")


# ----------------------------------------------------------------------------- errors


def test_missing_params_json(tmp_path):
    d = copy_dir(shared("meta"), tmp_path / "m", skip=("params.json",))
    with pytest.raises(LlamaError, match="neither params.json"):
        load_llama(d)


def test_missing_or_truncated_shard(tmp_path):
    d = copy_dir(shared("hf"), tmp_path / "h")
    write_json(
        os.path.join(d, "model.safetensors.index.json"),
        {
            "weight_map": {
                "lm_head.weight": "model.safetensors",
                "model.norm.weight": "model-2.safetensors",
            }
        },
    )
    with pytest.raises(LlamaError, match="shard model-2.safetensors .* is missing"):
        load_llama(d)
    with open(os.path.join(d, "model.safetensors"), "r+b") as f:
        f.truncate(500_000)
    os.remove(os.path.join(d, "model.safetensors.index.json"))
    with pytest.raises(LlamaError, match="truncated"):
        load_llama(d)


def test_malformed_index(tmp_path):
    d = copy_dir(shared("hf"), tmp_path / "h")
    for index in (
        [1],
        {"weight_map": ["model.safetensors"]},
        {"weight_map": {"lm_head.weight": 3}},
        {},
    ):
        write_json(os.path.join(d, "model.safetensors.index.json"), index)
        with pytest.raises(
            LlamaError, match="weight_map must be an object of tensor name -> file name"
        ):
            load_llama(d)


def test_unknown_rope_type(tmp_path):
    d = copy_dir(shared("hf"), tmp_path / "h")
    c = read_json(os.path.join(d, "config.json"))
    c["rope_parameters"]["rope_type"] = "yarn"
    write_json(os.path.join(d, "config.json"), c)
    with pytest.raises(LlamaError, match="unknown rope type 'yarn'"):
        load_llama(d)


def test_tokenizer_vocab_mismatch(tmp_path):
    d = copy_dir(shared("meta"), tmp_path / "m")
    with (
        open(shared("tokenizer.model")) as src,
        open(os.path.join(d, "tokenizer.model"), "w") as dst,
    ):
        dst.writelines(src.readlines()[:-1])  # drop the last rank: 599 tokens
    with pytest.raises(LlamaError, match="599 tokens but the weights have 600"):
        load_llama(d)


def test_missing_tensor(tmp_path):
    d = copy_dir(shared("meta"), tmp_path / "m", skip=("consolidated.00.pth",))
    sd = torch.load(shared("meta", "consolidated.00.pth"), weights_only=True)
    del sd["layers.1.feed_forward.w3.weight"]
    torch.save(sd, os.path.join(d, "consolidated.00.pth"))
    with pytest.raises(LlamaError, match="layers.1.feed_forward.w3.weight is missing"):
        load_llama(d)


DROP = object()  # in an edit: remove the key
ROPE = {
    "factor": 8.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3",
}  # hf/config.json's rope_parameters


def without(d, key):
    return {k: v for k, v in d.items() if k != key}


# (layout, keys to set in params.json / config.json or what replaces the whole file, message)
BAD_CONFIGS = [
    ("meta", [64, 2, 4], "params.json is not a JSON object"),
    ("meta", {"n_heads": 0}, "params.json: n_heads must be a positive integer, not 0"),
    ("meta", {"n_heads": "4"}, "n_heads must be a positive integer, not '4'"),
    ("meta", {"n_heads": None}, "n_heads must be a positive integer, not None"),
    ("meta", {"n_heads": DROP}, "params.json lacks n_heads"),
    ("meta", {"dim": 64.0}, "dim must be a positive integer, not 64.0"),
    ("meta", {"dim": -64}, "dim must be a positive integer, not -64"),
    ("meta", {"dim": 0}, "dim must be a positive integer, not 0"),
    ("meta", {"n_layers": 0}, "n_layers must be a positive integer, not 0"),
    ("meta", {"n_layers": True}, "n_layers must be a positive integer, not True"),
    ("meta", {"vocab_size": -1}, "vocab_size must be a positive integer, not -1"),
    ("meta", {"vocab_size": DROP}, "params.json lacks vocab_size"),
    ("meta", {"multiple_of": 0}, "multiple_of must be a positive integer, not 0"),
    (
        "meta",
        {"ffn_dim_multiplier": "1.3"},
        "ffn_dim_multiplier must be a positive number, not '1.3'",
    ),
    ("meta", {"norm_eps": -1e-5}, "norm_eps must be a positive number, not -1e-05"),
    ("meta", {"rope_theta": float("nan")}, "rope_theta must be a positive number, not nan"),
    ("meta", {"dim": 2**40}, "dim 1099511627776 is implausibly large"),
    ("meta", {"rope_theta": float("inf")}, "rope_theta inf is implausibly large"),
    ("meta", {"n_layers": 3}, "params.json says 3 layers but the weights hold 2"),
    ("meta", {"n_kv_heads": 0}, "n_kv_heads must be a positive integer, not 0"),
    ("meta", {"n_kv_heads": 3}, "params.json: n_kv_heads 3 does not divide n_heads 4"),
    ("meta", {"n_kv_heads": 8}, "n_kv_heads 8 does not divide n_heads 4"),
    ("meta", {"n_heads": 5}, "params.json: dim 64 is not divisible by n_heads 5"),
    ("meta", {"n_heads": 64, "n_kv_heads": 64}, "the head size dim / n_heads = 1 is odd"),
    ("meta", {"use_scaled_rope": "yes"}, "use_scaled_rope must be true or false, not 'yes'"),
    ("meta", {"rope_scaling_factor": 0}, "rope_scaling_factor must be a positive number, not 0"),
    ("hf", ["LlamaForCausalLM"], "config.json is not a JSON object"),
    (
        "hf",
        {"num_attention_heads": 0},
        "config.json: num_attention_heads must be a positive integer, not 0",
    ),
    ("hf", {"hidden_size": "64"}, "hidden_size must be a positive integer, not '64'"),
    ("hf", {"num_hidden_layers": None}, "num_hidden_layers must be a positive integer, not None"),
    ("hf", {"intermediate_size": 224.0}, "intermediate_size must be a positive integer, not 224.0"),
    ("hf", {"vocab_size": 0}, "vocab_size must be a positive integer, not 0"),
    ("hf", {"rms_norm_eps": 0}, "rms_norm_eps must be a positive number, not 0"),
    (
        "hf",
        {"max_position_embeddings": "131072"},
        "max_position_embeddings must be a positive integer, not '131072'",
    ),
    (
        "hf",
        {"num_key_value_heads": 3},
        "num_key_value_heads 3 does not divide num_attention_heads 4",
    ),
    (
        "hf",
        {"num_attention_heads": 3, "num_key_value_heads": 1},
        "hidden_size 64 is not divisible by num_attention_heads 3",
    ),
    # would load and compute wrong logits: this model derives the head size from the two
    (
        "hf",
        {"head_dim": 32},
        "config.json: head_dim 32 contradicts hidden_size / num_attention_heads = 16",
    ),
    ("hf", {"rope_parameters": [8.0]}, "config.json: rope_parameters must be an object, not [8.0]"),
    ("hf", {"rope_parameters": "llama3"}, "rope_parameters must be an object, not 'llama3'"),
    (
        "hf",
        {"rope_parameters": without(ROPE, "factor")},
        "config.json rope_parameters lacks factor",
    ),
    (
        "hf",
        {"rope_parameters": {**ROPE, "factor": None}},
        "rope_parameters: factor must be a positive number, not None",
    ),
    (
        "hf",
        {"rope_parameters": {**ROPE, "factor": "8"}},
        "rope_parameters: factor must be a positive number, not '8'",
    ),
    (
        "hf",
        {"rope_parameters": without(ROPE, "original_max_position_embeddings")},
        "rope_parameters lacks original_max_position_embeddings",
    ),
    (
        "hf",
        {"rope_parameters": {**ROPE, "high_freq_factor": 1.0}},
        "high_freq_factor 1.0 must exceed low_freq_factor 1.0",
    ),
    (
        "hf",
        {"rope_parameters": DROP, "rope_scaling": without(ROPE, "factor")},
        "config.json rope_scaling lacks factor",
    ),
    (
        "hf",
        {"rope_parameters": DROP, "rope_scaling": 8.0},
        "config.json: rope_scaling must be an object, not 8.0",
    ),
]


@pytest.mark.parametrize(
    "layout, edit, message", BAD_CONFIGS, ids=[f"{lay}-{m}" for lay, _, m in BAD_CONFIGS]
)
def test_malformed_config(tmp_path, layout, edit, message):
    d = copy_dir(shared(layout), tmp_path / layout)
    path = os.path.join(d, "params.json" if layout == "meta" else "config.json")
    conf = edit if isinstance(edit, list) else {**read_json(path), **edit}
    write_json(
        path, {k: v for k, v in conf.items() if v is not DROP} if isinstance(conf, dict) else conf
    )
    with pytest.raises(LlamaError, match=re.escape(message)):
        load_llama(d)


BAD_HEADERS = [  # (safetensors header, message); the file holds 64 bytes of data after it
    ([1, 2], "header is not a JSON object"),
    ({"w": [1, 2]}, "header entry w needs dtype, shape and data_offsets"),
    ({"w": {"dtype": "F32", "shape": [4]}}, "header entry w needs dtype, shape and data_offsets"),
    (
        {"w": {"shape": [4], "data_offsets": [0, 16]}},
        "header entry w needs dtype, shape and data_offsets",
    ),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}, "header entry w needs dtype"),
    (
        {"w": {"dtype": "I64", "shape": [4], "data_offsets": [0, 32]}},
        "w is 'I64'; only F32, F16, BF16",
    ),
    ({"w": {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, "w is ['F32']"),
    (
        {"w": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}},
        "w has shape 4, not a list of sizes",
    ),
    ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "w has shape [-4]"),
    (
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}},
        "w has data_offsets [0, 12], which do not hold 4 F32",
    ),
    (
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": [-16, 0]}},
        "w has data_offsets [-16, 0]",
    ),
    (
        {"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}},
        "w has data_offsets ['0', '16']",
    ),
    (
        {"w": {"dtype": "F32", "shape": [32], "data_offsets": [0, 128]}},
        "truncated: w ends past the end",
    ),
]


@pytest.mark.parametrize("header, message", BAD_HEADERS, ids=[m for _, m in BAD_HEADERS])
def test_malformed_safetensors_header(tmp_path, header, message):
    h = json.dumps(header).encode()
    (tmp_path / "model.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + bytes(64))
    with pytest.raises(LlamaError, match=re.escape(message)):
        _read_safetensors(str(tmp_path / "model.safetensors"))


def test_llama_weights_through_every_stage(tmp_path):
    """Llama weights (the tiny hf fixture) as smart, then corrupt, improve and evaluate, each with
    its usual meaning: smart's answers end at '$' where the checker reads them, so some of its
    solutions are verified, stupid's wrong attempts become correction pairs, and results.json
    holds every model. sample.py scores the Llama smart like any other."""
    from conftest import FAST_CORRUPT, FAST_EVAL, FAST_IMPROVE, run

    hf, out = os.path.abspath(shared("hf")), str(tmp_path)
    stages = [
        ("train.py", f"--init_from=llama:{hf}", "--max_digits=2", "--steps=300", "--eval_every=0"),
        ("sample.py", f"--ckpt={out}/smart/ckpt.pt", "--digits=1", "--num=20"),
        ("corrupt.py", *FAST_CORRUPT),
        ("improve.py", *FAST_IMPROVE),
        ("evaluate.py", *FAST_EVAL),
    ]
    logs = {}
    for script, *args in stages:
        r = run(script, *args, *([] if script == "sample.py" else [f"--out_dir={out}"]))
        assert r.returncode == 0, f"{script}: {r.stderr[-2000:]}"
        logs[script] = r.stdout
    ckpt = torch.load(tmp_path / "smart" / "ckpt.pt", weights_only=False)
    assert ckpt["data_cfg"]["tokenizer"]["kind"] == "llama" and ckpt["model_cfg"]["pos"] == "rope"
    right, steps = map(
        int, re.search(r"(\d+)/20 correct .*, (\d+) with every", logs["sample.py"]).groups()
    )
    assert right > 0 and steps > 0  # answers that end where the checker reads them
    assert re.search(r"corrupting with [1-9]\d* wrong", logs["corrupt.py"])
    solved = re.search(
        r"\((\d+) with every step right\).* (\d+) correction pairs", logs["improve.py"]
    )
    assert solved and int(solved[1]) > 0 and int(solved[2]) > 0
    results = json.load(open(tmp_path / "results.json"))
    made = {"smart", "stupid", "learner", "expert_iteration", "learner_no_attempt"}
    assert set(results["models"]) >= made | {"learner_on_smart"}
    for line in logs["sample.py"].splitlines()[:-1]:  # each completion stops at its first '$'
        assert line.count("$") == 1, line


def test_a_llama_model_stays_a_text_completer(tmp_path):
    """sample.py --init_from=llama:DIR completes plain text (a prompt may hold a '$');
    a directory with no Llama weights is one line of bad input."""
    from conftest import run

    meta = os.path.abspath(shared("meta"))
    r = run("sample.py", f"--init_from=llama:{meta}", "--prompt=a $ b", "--max_new_tokens=8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "\na $ b" in "\n" + r.stdout  # the prompt, then whatever the random weights write
    r = run("train.py", f"--init_from=llama:{tmp_path}", f"--out_dir={tmp_path}")
    assert r.returncode == 2 and "neither params.json" in r.stderr and "Traceback" not in r.stderr
