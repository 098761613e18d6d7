"""
Sample from any nanocorrect checkpoint and score the completions with the exact checker.

    python sample.py                                  # 8 fresh problems at the smart model's longest length
    python sample.py --digits=10 --num=200 --quiet    # accuracy at 10 digits
    python sample.py --prompt="4321+8765="            # your own prompt (in the checkpoint's format)
    python sample.py --prompt_file=prompts.txt --temperature=0.8 --num_samples=4

Also importable: the later stages sample and score through complete() and score().
"""
import argparse

import torch
from tqdm import tqdm

from cot_data import KEEP, CharTokenizer, ProblemStream, check, correction_prompt, eval_exclusions
from model import CheckpointError, fail, generate, load_checkpoint, pick_device


def tokenizer_from(data_cfg):
    tc = data_cfg["tokenizer"]
    if tc["kind"] == "char":
        return CharTokenizer(tc["vocab"])
    from cot_data import LlamaTokenizer
    return LlamaTokenizer(tc["path"])


def encode_prompt(tok, text):
    """A prompt's ids; a Llama tokenizer puts <|begin_of_text|> first, as Llama expects."""
    bos = getattr(tok, "bos_id", None)
    return ([bos] if bos is not None else []) + tok.encode(text)


def complete(model, tok, prompts, max_new_tokens, temperature=0.0, top_k=None, num_samples=1,
             batch_size=256, seed=0, progress=False):
    """Completions (text) of text prompts, prompt-major when num_samples > 1."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    ids = [encode_prompt(tok, p) for p in prompts]
    limit = model.cfg.block_size - max_new_tokens
    if max(map(len, ids)) > limit:
        raise ValueError(f"a prompt is longer than the model supports ({limit} tokens)")
    out = []
    per = max(1, batch_size // num_samples)
    for i in tqdm(range(0, len(ids), per), desc="sampling", disable=not progress, leave=False):
        rows = generate(model, ids[i:i + per], max_new_tokens, temperature, top_k, getattr(tok, "stop_ids", tok.stop_id),
                        num_samples, tok.pad_id, generator=gen)
        out += [tok.decode(r) for r in rows]
    return out


def max_new_for(problems):
    """Room for twice the reference completion: enough for any sane attempt, bounded for a broken one."""
    return 2 * max(len(p.completion) for p in problems) + 8


def score(model, tok, problems, prompts=None, temperature=0.0, num_samples=1, **kw):
    """Generate for each problem (from its own prompt, or from `prompts` - e.g. a correction prompt
    holding an attempt) and check each completion. -> list of dicts, one per sample."""
    prompts = prompts or [p.prompt for p in problems]
    comps = complete(model, tok, prompts, max_new_for(problems), temperature,
                     num_samples=num_samples, **kw)
    recs = []
    for j, c in enumerate(comps):
        p = problems[j // num_samples]
        answer, ok = check(p.task, p.fmt, p.operands, c)
        recs.append({"digits": p.digits, "operands": p.operands, "completion": c,
                     "answer": answer, "correct": ok})
    return recs


def correct(model, tok, problems, attempts, **kw):
    """Hand the learner an attempt (a completion) at each problem; its answer replaces the attempt,
    unless the answer is KEEP, which keeps the attempt (the record then says kept)."""
    room = model.cfg.block_size - max_new_for(problems) - 1    # 1 for a Llama tokenizer's BOS
    prompts = [correction_prompt(p.prompt, a, model.cfg.max_digit_index - 1, room) for p, a in zip(problems, attempts)]
    recs = score(model, tok, problems, prompts=prompts, **kw)
    for r, p, a in zip(recs, problems, attempts):
        if r["completion"] == KEEP:
            answer, ok = check(p.task, p.fmt, p.operands, a)
            r.update(completion=a, answer=answer, correct=ok, kept=True)
    return recs


def accuracy_by_digits(recs):
    acc = {}
    for r in recs:
        acc.setdefault(r["digits"], []).append(r["correct"])
    return {n: sum(v) / len(v) for n, v in sorted(acc.items())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="out/smart/ckpt.pt", help="checkpoint of any stage")
    ap.add_argument("--init_from", default=None, help="llama:DIR loads Llama 3 weights instead of --ckpt")
    ap.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    ap.add_argument("--prompt_file", help="one prompt per line")
    ap.add_argument("--digits", type=int, help="fresh problems of this many digits (default: trained max)")
    ap.add_argument("--num", type=int, default=8, help="how many fresh problems")
    ap.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top_k", type=int, default=None)
    ap.add_argument("--max_new_tokens", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    a = ap.parse_args(argv)
    device = pick_device(a.device)
    torch.manual_seed(a.seed)
    try:
        if a.init_from and a.init_from.startswith("llama:"):
            from model import load_llama
            model, tok = load_llama(a.init_from[len("llama:"):], device=device)
            data_cfg = None
        else:
            model, ckpt = load_checkpoint(a.ckpt, device=device)
            data_cfg = ckpt["data_cfg"]
            tok = tokenizer_from(data_cfg)
    except (CheckpointError, ValueError, OSError) as e:
        fail(str(e))
    prompts = list(a.prompt or [])
    if a.prompt_file:
        try:
            prompts += [l.rstrip("\n") for l in open(a.prompt_file) if l.strip()]
        except OSError as e:
            fail(f"cannot read {a.prompt_file}: {e.strerror}")
    if prompts:   # free-form prompts: no truth to check against, only completions
        try:
            for p in prompts:
                tok.encode(p)
            comps = complete(model, tok, prompts, a.max_new_tokens or 128, a.temperature, a.top_k,
                             a.num_samples, seed=a.seed)
        except ValueError as e:
            fail(str(e))
        for j, c in enumerate(comps):
            print(f"{prompts[j // a.num_samples]}{c}")
        return
    if data_cfg is None:
        fail("a Llama model needs --prompt or --prompt_file")
    task, fmt, n = data_cfg["task"], data_cfg["fmt"], a.digits or data_cfg["max_digits"]
    # fresh problems, none of them from an evaluation set
    stream = ProblemStream(task, fmt, n, n, seed=10_000 + a.seed, exclude=eval_exclusions(task, n))
    problems = [stream.sample() for _ in range(a.num)]
    try:
        recs = score(model, tok, problems, temperature=a.temperature, num_samples=a.num_samples,
                     top_k=a.top_k, seed=a.seed, progress=True)
    except ValueError as e:
        fail(str(e))
    for j, r in enumerate(recs):
        if not a.quiet:
            mark = "ok " if r["correct"] else "BAD"
            p = problems[j // a.num_samples]
            print(f"{mark} {p.prompt}{r['completion']}   (answer {r['answer']}, truth {p.answer})")
    ok = sum(r["correct"] for r in recs)
    print(f"{task} {fmt} {n} digits: {ok}/{len(recs)} correct ({100 * ok / len(recs):.1f}%)")


if __name__ == "__main__":
    main()
