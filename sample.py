"""
Sample from any nanocorrect checkpoint and score the completions with the exact checker.

    python sample.py                                  # 8 fresh problems at the smart model's N
    python sample.py --digits=10 --num=200 --quiet    # accuracy at 10 digits
    python sample.py --prompt="4321+8765="            # your own prompt (in the checkpoint's format)
    python sample.py --prompt_file=prompts.txt --temperature=0.8
    python sample.py --init_from=llama:DIR --prompt="The capital of France is"
"""

from dataclasses import dataclass

import torch

from cli import BadInput, check_fits, opt, parse_config, run_main
from common import (
    DEVICE_HELP,
    complete,
    encode_prompt,
    load_checkpoint,
    pick_device,
    score,
    tokenizer_from,
)
from cot_data import ProblemStream
from llama import load_llama

MAX_NEW = 128  # tokens generated for a prompt of your own, at most
STREAM_SEED = 10_000  # fresh problems from a stream of their own: not smart's training problems


@dataclass
class SampleConfig:
    ckpt: str = opt("out/smart/ckpt.pt", "checkpoint of any stage")
    init_from: str = opt("", "llama:DIR loads Llama 3 weights instead of --ckpt (give --prompt)")
    prompt: list = opt(None, "a prompt of your own (may be given several times)", many=True)
    prompt_file: str = opt("", "a file of prompts, one per line")
    digits: int = opt(None, "fresh problems of this many digits; auto: the trained N", lo=1)
    num: int = opt(8, "how many fresh problems", lo=1)
    temperature: float = opt(0.0, "sampling temperature; 0 = greedy", lo=0)
    top_k: int = opt(None, "sample only among the k likeliest tokens; auto: all of them", lo=1)
    max_new_tokens: int = opt(None, "tokens for your own prompts; auto: 128 or the room left", lo=1)
    seed: int = opt(1, "random seed", lo=0)
    device: str = opt("auto", DEVICE_HELP)
    quiet: bool = opt(False, "print only the summary")

    def check(self):
        if self.init_from and not self.init_from.startswith("llama:"):
            raise BadInput(f"--init_from={self.init_from}: use llama:DIR")
        check_fits(self.num, "--num")


def read_prompts(cfg, tok):
    """--prompt and the lines of --prompt_file, each checked against the tokenizer's vocabulary."""
    prompts = list(cfg.prompt or [])
    if "" in prompts:
        raise BadInput("--prompt is empty: give the start of a text to complete")
    if cfg.prompt_file:
        try:
            with open(cfg.prompt_file) as f:
                lines = [line.rstrip("\n") for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            why = getattr(e, "strerror", None) or e
            raise BadInput(f"cannot read {cfg.prompt_file}: {why}") from None
        if not lines:
            raise BadInput(f"{cfg.prompt_file} holds no prompt (one a line)")
        prompts += lines
    try:
        for p in prompts:
            tok.encode(p)
    except ValueError as e:
        raise BadInput(str(e)) from None
    return prompts


def main(argv=None):
    cfg = parse_config(SampleConfig, __doc__, argv)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.init_from:  # a plain text completer: it stops where Llama stops
        path = cfg.init_from[len("llama:") :]
        data = None
        model, tok = load_llama(path, device=device)
        if tok is None:
            raise BadInput(f"{path} has no tokenizer.model to read prompts with")
    else:
        model, _, data = load_checkpoint(cfg.ckpt, device=device)
        tok = tokenizer_from(data)
    prompts = read_prompts(cfg, tok)
    if prompts:  # your own prompts: no truth to check against, only completions
        longest = max(len(encode_prompt(tok, p)) for p in prompts)
        new = cfg.max_new_tokens or max(1, min(MAX_NEW, model.cfg.block_size - longest))
        completions = complete(
            model, tok, prompts, new, cfg.temperature, seed=cfg.seed, top_k=cfg.top_k
        )
        for prompt, completion in zip(prompts, completions):
            print(prompt + completion)
        return
    if data is None:
        raise BadInput("a Llama model needs --prompt or --prompt_file")
    n = cfg.digits or data.max_digits
    stream = ProblemStream(data.task, data.fmt, n, n, seed=STREAM_SEED + cfg.seed)
    try:
        problems = [stream.sample() for _ in range(cfg.num)]
    except ValueError as e:  # a format that cannot write numbers that long
        raise BadInput(str(e)) from None
    recs = score(
        model,
        tok,
        problems,
        temperature=cfg.temperature,
        seed=cfg.seed,
        top_k=cfg.top_k,
        progress_bar=True,
    )
    for p, r in zip(problems, recs):
        if not cfg.quiet:
            verdict = "ok " if r["correct"] else "BAD"
            print(
                f"{verdict} {p.prompt}{r['completion']}   (answer {r['answer']}, truth {p.answer})"
            )
    ok = sum(r["correct"] for r in recs)
    steps = sum(r["verified"] for r in recs)
    print(
        f"{data.task} {data.fmt} {n} digits: {ok}/{len(recs)} correct "
        f"({100 * ok / len(recs):.1f}%), {steps} with every step right"
    )


if __name__ == "__main__":
    run_main(main)
