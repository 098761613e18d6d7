"""experiments/bench.py: ours against transformers' GPT-2, on a tiny model (no timing is
asserted)."""

import sys

import pytest
import torch

from cli import BadInput
from experiments.bench import BenchConfig, bench, main, peer_of
from model import GPT, ModelConfig

TINY = [
    "--dim=32",
    "--n_layers=2",
    "--n_heads=2",
    "--ffn_hidden=64",
    "--repeats=1",
    "--batch_size=6",
    "--train_steps=2",
    "--new_tokens=9",
]


def test_without_transformers_it_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(BadInput, match="pip install transformers"):
        bench(BenchConfig())


def test_the_peer_holds_our_weights_and_computes_the_same_logits():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = GPT(
        ModelConfig(
            vocab_size=20,
            dim=32,
            n_layers=2,
            n_heads=2,
            n_kv_heads=2,
            ffn_hidden=64,
            pos="learned",
            block_size=16,
        )
    )
    x = torch.randint(0, 20, (3, 16))
    peer = peer_of(ours).eval()
    assert torch.allclose(ours(x)[0], peer(input_ids=x).logits, atol=1e-5)


def test_both_models_train_on_and_generate_the_same_tokens(capsys):
    pytest.importorskip("transformers")
    r = main(TINY)
    for kind, per_round in (("train", None), ("generate", 6 * 9)):  # 6 prompts x 9 new tokens each
        assert r[kind]["ours"] > 0 and r[kind]["peer"] > 0
        assert r[kind]["tokens"]["ours"] == r[kind]["tokens"]["peer"]
        assert per_round is None or r[kind]["tokens"]["ours"] == [per_round]
    assert r["agree"] == r["prompts"] == 6  # greedy: same weights, same words
    out = capsys.readouterr().out
    assert "training tokens/s" in out and "cached generation tokens/s" in out and "torch" in out
