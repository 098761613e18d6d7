import os
import random

import pytest
import torch

from cli import BadInput
from common import load_checkpoint, pack, save_checkpoint
from cot_data import CharTokenizer, DataConfig, make_problem, random_operands
from generate import generate
from model import GPT, ModelConfig, digit_indices


def tiny(pos="abacus", **kw):
    torch.manual_seed(0)
    cfg = dict(
        vocab_size=CharTokenizer().vocab_size,
        dim=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_hidden=64,
        pos=pos,
        digit_lo=CharTokenizer().digit_lo,
        block_size=128,
    )
    cfg.update(kw)
    return GPT(ModelConfig(**cfg))


def test_forward_shapes_and_loss():
    m = tiny()
    x = torch.randint(1, 40, (3, 17))
    logits, loss = m(x)
    assert logits.shape == (3, 17, m.cfg.vocab_size) and loss is None
    _, loss = m(x, x)
    assert loss.item() > 0


def test_forward_refuses_what_the_model_cannot_hold():
    m = tiny("abacus", block_size=16, max_digit_index=8)
    with pytest.raises(ValueError, match="block_size 16"):
        m(torch.full((2, 17), 20))
    m(torch.full((2, 16), 20))  # exactly block_size fits
    nine_digits = torch.tensor([CharTokenizer().encode("1" * 9)])
    with pytest.raises(ValueError, match="longer than the model supports"):
        m(nine_digits)


def test_digit_indices():
    tok = CharTokenizer()
    ids = torch.tensor([tok.encode("12+345=0;#67$")])
    assert digit_indices(ids, tok.digit_lo)[0].tolist() == [1, 2, 0, 1, 2, 3, 0, 1, 0, 0, 1, 2, 0]
    packed = torch.tensor([tok.encode("12+3456")])  # two sequences end to end: "12+34" and "56"
    starts = torch.tensor([[True, False, False, False, False, True, False]])
    assert digit_indices(packed, tok.digit_lo, starts)[0].tolist() == [1, 2, 0, 1, 2, 1, 2]
    assert digit_indices(packed, tok.digit_lo, ~starts | starts)[0].tolist() == [
        1,
        1,
        0,
        1,
        1,
        1,
        1,
    ]


def test_checkpoint_round_trip(tmp_path):
    m = tiny("rope")
    path = str(tmp_path / "smart" / "ckpt.pt")
    data = DataConfig("add", "reverse", 3, CharTokenizer().config())
    save_checkpoint(
        path,
        m,
        "smart",
        7,
        data,
        "run1",
        dict(optimizer=torch.optim.AdamW(m.parameters()).state_dict()),
    )
    assert os.listdir(tmp_path / "smart") == ["ckpt.pt"]  # no temp file left behind
    m2, ckpt, data2 = load_checkpoint(path, stages=["smart"], run="run1")
    x = torch.randint(1, 40, (2, 9))
    assert torch.equal(m(x)[0], m2(x)[0])
    assert (
        ckpt["step"] == 7
        and ckpt["stage"] == "smart"
        and "optimizer" in ckpt
        and ckpt["data_cfg"]["task"] == "add"
    )
    assert data2 == data and ckpt["run"] == "run1"
    with pytest.raises(BadInput, match="stage 'smart'"):
        load_checkpoint(path, stages=["stupid"])
    with pytest.raises(BadInput, match="another run"):
        load_checkpoint(path, run="run2")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput, match="not a readable"):
        load_checkpoint(str(tmp_path / "bad.pt"))
    with pytest.raises(BadInput, match="no checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))


def test_the_learner_can_read_a_runaway_attempt():
    # such attempts (smart's, past N) once crashed evaluation: handed to the learner they are cut
    from cot_data import correction_prompt
    from evaluate import correct

    assert correction_prompt("1+2=", "3" * 12 + "#3$", longest_number=5) == "1+2=" + "3" * 5 + "#3>"
    assert correction_prompt("1+2=", "3" * 12 + "#3$") == "1+2=" + "3" * 12 + "#3>"
    m = tiny("abacus", max_digit_index=8)
    p = make_problem("add", [12, 34], "reverse")
    recs = correct(
        m, CharTokenizer(), [p, p], ["0" * 30 + "#64$", "0;" * 100 + "#64$"]
    )  # too long for block_size
    assert len(recs) == 2 and recs[1]["digits"] == 2
    assert correction_prompt("1+2=", "0;" * 10 + "#3$", max_len=9) == "1+2=0;0;>"


def test_tiny_model_overfits_a_handful_of_problems():
    tok = CharTokenizer()
    rng = random.Random(0)
    probs = [make_problem("add", random_operands("add", 3, rng), "reverse", 3) for _ in range(8)]
    x, y = padded([(tok.encode(p.prompt), tok.encode(p.completion)) for p in probs])[:2]
    m = tiny(abacus_offset=0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    out = generate(m, [tok.encode(p.prompt) for p in probs], 20, stop_ids=[tok.stop_id])
    assert [tok.decode(o) for o in out] == [p.completion for p in probs]


def padded(pairs):
    """The batch a packed batch must equal: one example a row, right-padded, the loss on the
    completion, positions from 0 and the causal mask (None)."""
    T = max(len(p) + len(c) for p, c in pairs) - 1
    x, y = (
        torch.zeros(len(pairs), T, dtype=torch.long),
        torch.full((len(pairs), T), -1, dtype=torch.long),
    )
    for i, (p, c) in enumerate(pairs):
        x[i, : len(p) + len(c) - 1], y[i, len(p) - 1 : len(p) + len(c) - 1] = (
            torch.tensor(p + c)[:-1],
            torch.tensor(c),
        )
    return x, y, None, None


def test_a_packed_batch_puts_the_loss_on_completions_only():
    x, y, positions, mask = pack([([1, 2, 3], [4, 5]), ([1], [6, 7, 8])], "cpu")
    assert {tuple(r) for r in x.tolist()} == {(1, 2, 3, 4), (1, 6, 7, 0)}  # too long to share a row
    assert {tuple(r) for r in y.tolist()} == {(-1, -1, 4, 5), (6, 7, 8, -1)}


def test_packed_batches_give_the_padded_batch_loss_and_gradient():
    """Examples laid end to end in rows, each attending only to itself, are the same batch."""
    tok, rng = CharTokenizer(), random.Random(0)
    pairs = [
        (tok.encode(p.prompt), tok.encode(p.completion))
        for p in (
            make_problem("add", random_operands("add", rng.randint(1, 6), rng), "reverse")
            for _ in range(13)
        )
    ]
    pad, packed = padded(pairs), pack(pairs, "cpu")
    assert packed[0].numel() < pad[0].numel()  # fewer positions to compute
    assert int((packed[1] >= 0).sum()) == int((pad[1] >= 0).sum())  # the same loss tokens
    for pos in ("abacus", "learned", "rope"):
        m = tiny(pos, abacus_offset=0)
        losses, grads = [], []
        for x, y, positions, mask in (pad, packed):
            m.zero_grad()
            _, loss = m(x, y, positions=positions, mask=mask)
            loss.backward()
            losses.append(loss.item())
            grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        assert abs(losses[0] - losses[1]) < 1e-5 and torch.allclose(
            grads[0], grads[1], atol=1e-6
        ), pos


def test_a_packed_example_is_not_seen_by_its_row_neighbours():
    x, y, positions, mask = pack([([1], [3]), ([4], [5, 6]), ([7, 8, 9], [10])], "cpu")
    assert x.size(0) == 2 and x.size(1) == 3  # the longest alone; the other two share a row
    m = tiny("learned", abacus_offset=0).eval()
    logits, _ = m(x, positions=positions, mask=mask)
    changed = x.clone()
    changed[x == 1] = (
        11  # another first token in one example: its row neighbour's logits stay the same
    )
    logits2, _ = m(changed, positions=positions, mask=mask)
    other = x != 1
    assert torch.allclose(logits[other], logits2[other], atol=1e-6) and not torch.allclose(
        logits, logits2
    )


def test_each_packed_example_gets_its_own_abacus_shift():
    m = tiny("abacus", max_digit_index=40, abacus_offset=16).train()
    seen = []
    m.digit_embeddings.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    digits = [CharTokenizer().digit_lo + d for d in (1, 2, 3)]
    x, y, positions, mask = pack(
        [([0] * 12, [0])] + [(digits, [0])] * 8, "cpu"
    )  # eight runs of digits, four to a row
    assert x.size(0) == 3
    torch.manual_seed(0)
    m(x, y, positions=positions, mask=mask)
    starts = (positions == 0) & (x == digits[0])
    per_row = [
        set(seen[0][r][starts[r]].tolist()) for r in range(3)
    ]  # each example's first index: 1 + its shift
    assert sorted(map(len, per_row))[-1] > 1  # examples sharing a row are shifted apart


def test_mixed_precision_only_on_a_cuda_gpu_with_bf16(monkeypatch):
    """On a CPU nothing changes (the numbers stay fp32's); on a CUDA GPU with bf16, autocast."""
    import contextlib
    import warnings

    from common import autocast

    assert isinstance(autocast("cpu"), contextlib.nullcontext)
    assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )
    assert isinstance(autocast("cuda"), contextlib.nullcontext)  # bf16 only emulated: not worth it
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no GPU here: torch warns it disables it
        amp = autocast("cuda:0")
    assert isinstance(amp, torch.autocast) and amp.fast_dtype == torch.bfloat16


def test_abacus_rope_uses_both_position_signals():
    """abacus_rope: a digit's index in its number (a table) and its place in the sequence (RoPE)."""
    m = tiny("abacus_rope")
    assert hasattr(m, "digit_embeddings") and hasattr(m, "inv_freq")
    idx = torch.tensor([CharTokenizer().encode("12+34=")])
    base, _ = m(idx)
    with torch.no_grad():
        m.digit_embeddings.weight.zero_()
    no_abacus, _ = m(idx)
    assert not torch.allclose(base, no_abacus)  # the digit table is read
    m.inv_freq = torch.zeros_like(m.inv_freq)  # no rotation: RoPE off
    neither, _ = m(idx)
    assert not torch.allclose(no_abacus, neither)  # and so are the positions
