import pytest
import torch

from cot_data import CharTokenizer
from generate import KVCache, generate, left_pad, next_token, prefill_mask
from model import GPT, ModelConfig, digit_indices


def tiny(pos="abacus", **kw):
    torch.manual_seed(0)
    tok = CharTokenizer()
    cfg = dict(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2)
    cfg.update(ffn_hidden=64, pos=pos, digit_lo=tok.digit_lo, block_size=128)
    cfg.update(kw)
    return GPT(ModelConfig(**cfg))


@torch.no_grad()
def recomputed(
    model,
    prompts,
    max_new_tokens,
    stop_ids=(),
    temperature=0.0,
    top_k=None,
    pad_id=0,
    generator=None,
):
    """generate() as it was before the cache: the whole prefix through the model every step, the
    buffers grown by one token a step, done.all() looked at every step."""
    cfg = model.cfg
    model.eval()
    idx, real = left_pad(prompts, pad_id, "cpu")
    digit = digit_indices(idx, cfg.digit_lo) * real
    stops = torch.tensor(list(stop_ids), dtype=torch.long)
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out = []
    for _ in range(max_new_tokens):
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)
        logits, _ = model(idx, positions=positions, mask=prefill_mask(real), digit_index=digit)
        nxt = next_token(logits[:, -1, :].float(), temperature, top_k, generator)
        nxt = torch.where(done, pad_id, nxt)
        out.append(nxt)
        done = done | torch.isin(nxt, stops)
        idx = torch.cat([idx, nxt[:, None]], 1)
        real = torch.cat([real, torch.ones(len(prompts), 1, dtype=torch.bool)], 1)
        is_digit = (nxt >= cfg.digit_lo) & (nxt < cfg.digit_lo + 10)
        index = ((digit[:, -1] + 1) * is_digit).clamp(max=cfg.max_digit_index - 1)
        digit = torch.cat([digit, index[:, None]], 1)
        if done.all():
            break
    rows = torch.stack(out, 1).tolist()
    return [r[: next((i + 1 for i, t in enumerate(r) if t in stop_ids), len(r))] for r in rows]


PROMPTS = ["12+34=", "9876+5432=", "1+1=", "31415+92653=", "7+", "=", "55555555+1="]


@pytest.mark.parametrize("pos", ["abacus", "rope", "learned", "none", "abacus_rope"])
@pytest.mark.parametrize("block", [("layernorm", "gelu", 4), ("rmsnorm", "swiglu", 2)])
@pytest.mark.parametrize("sampling", [(0.0, None), (1.0, None), (0.7, 5)])
def test_the_cache_gives_the_recomputed_prefix_tokens(pos, block, sampling):
    """Token for token, greedy and sampled, prompts of mixed lengths (left padding), with and
    without grouped-query attention; successive calls sharing one generator draw the same numbers,
    so rows stopping early must not change later calls' samples."""
    m = tiny(pos, norm=block[0], mlp=block[1], n_kv_heads=block[2])
    tok = CharTokenizer()
    prompts = [tok.encode(t) for t in PROMPTS]
    stops = [tok.stop_id, tok.digit_lo + 7]  # '7': an untrained model writes it now and then
    how = dict(stop_ids=stops, temperature=sampling[0], top_k=sampling[1], pad_id=tok.pad_id)
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)]
    for chunk in (prompts[:4], prompts[4:], prompts):
        cached = generate(m, chunk, 24, generator=gens[0], **how)
        assert cached == recomputed(m, chunk, 24, generator=gens[1], **how)
    assert torch.equal(gens[0].get_state(), gens[1].get_state())
    if sampling[0] == 0:  # alone or in a batch: the same
        assert cached == [generate(m, [p], 24, **how)[0] for p in prompts]


class MockModel(torch.nn.Module):
    """A model whose next token is (last token + 1) mod V; it records what each call was given."""

    def __init__(self):
        super().__init__()
        self.cfg = ModelConfig(vocab_size=12, dim=4, n_layers=1, n_heads=1, pos="none")
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, idx, targets=None, positions=None, mask=None, cache=None, digit_index=None):
        self.calls.append((idx.shape[1], mask.shape[-1], positions[:, -1].tolist()))
        cache.advance(idx.shape[1])
        return torch.nn.functional.one_hot((idx + 1) % 12, 12).float() * 10, None


def test_generate_against_mock_model():
    m = MockModel()
    out = generate(m, [[1, 2], [5]], 6, stop_ids=[7])
    assert out == [[3, 4, 5, 6, 7], [6, 7]]
    # one prefill, then one token a step against exactly the keys so far; positions skip padding;
    # on a CPU generation ends at the step where every row is done
    assert m.calls == [
        (2, 2, [1, 0]),
        (1, 3, [2, 1]),
        (1, 4, [3, 2]),
        (1, 5, [4, 3]),
        (1, 6, [5, 4]),
    ]
    assert generate(m, [[3], [3]], 4) == [[4, 5, 6, 7], [4, 5, 6, 7]]
    assert generate(m, [[3], [9]], 3, stop_ids=(5, 11)) == [[4, 5], [10, 11]]
    assert generate(m, [[3]], 0) == [[]]


def test_kv_cache_positions():
    cfg = ModelConfig(n_layers=1, dim=4, n_heads=1, n_kv_heads=1)
    c = KVCache(cfg, batch=2, max_len=8, device="cpu", dtype=torch.float32)
    k = torch.ones(2, 1, 3, 4)
    full_k, _ = c.insert(0, k, 2 * k)
    assert full_k.shape[2] == 3 and c.pos == 0
    c.advance(3)
    full_k, full_v = c.insert(0, 3 * torch.ones(2, 1, 1, 4), torch.zeros(2, 1, 1, 4))
    assert full_k.shape[2] == 4 and full_k[0, 0, :, 0].tolist() == [1, 1, 1, 3]


def test_left_pad_and_the_prefill_mask():
    idx, real = left_pad([[5, 6], [7]], 0, "cpu")
    assert idx.tolist() == [[5, 6], [0, 7]] and real.tolist() == [[True, True], [False, True]]
    mask = prefill_mask(real)[:, 0]
    assert mask.tolist() == [[[True, False], [True, True]], [[True, False], [False, True]]]


def test_sampling_is_seeded():
    m = tiny()
    p = [CharTokenizer().encode("12+34=")] * 4

    def g(s):
        return generate(
            m, p, 10, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(s)
        )

    assert g(1) == g(1) and g(1) != g(2)


def test_too_long_for_the_model():
    m = tiny("learned", block_size=16)
    with pytest.raises(ValueError, match="block_size"):
        generate(m, [[1] * 10], 10)
    assert len(generate(m, [[1] * 10], 6)[0]) == 6  # exactly block_size fits


def test_a_runaway_digit_run_in_the_output_is_not_an_error():
    # a broken model that writes digits forever must not crash generation past max_digit_index;
    # a prompt with a number that long is still refused, and the model is left as it was
    m = tiny("abacus", max_digit_index=8)
    tok = CharTokenizer()
    with torch.no_grad():  # the final norm outputs a constant that only the digit '0' reads
        m.norm.weight.zero_()
        m.norm.bias.zero_()
        m.norm.bias[0] = 1.0
        m.output.weight.zero_()
        m.output.weight[tok.digit_lo, 0] = 1.0
    out = generate(m, [tok.encode("12+34=")], 20)[0]
    assert tok.decode(out) == "0" * 20 and m.training
    with pytest.raises(ValueError, match="longer than the model supports"):
        generate(m, [tok.encode("1" * 9 + "=")], 2)
    assert m.training


def test_the_before_and_after_benchmark_runs(tmp_path, capsys):
    from experiments.bench import main

    # a stand-in for an older checkout: its model.py holds a generate() of the old signature
    (tmp_path / "model.py").write_text(
        "from generate import generate as new_generate\n"
        "from model import GPT, ModelConfig  # noqa: F401\n\n\n"
        "def generate(model, prompts, n, stop_id=None, pad_id=0):\n"
        "    stops = [] if stop_id is None else [stop_id]\n"
        "    return new_generate(model, prompts, n, stops, pad_id=pad_id)\n"
    )
    tiny_model = ["--dim=32", "--n_layers=2", "--n_heads=2", "--ffn_hidden=64"]
    rows = main(
        [f"--before={tmp_path}", *tiny_model, "--repeats=1", "--problems=3", "--digits=2,3"]
    )
    assert [r["digits"] for r in rows] == [2, 3] and all(r["tokens"] > 0 for r in rows)
    assert "before / after" in capsys.readouterr().out
