"""
Algorithmic chain-of-thought data for nanocorrect: tasks, formats, the tokenizer, the exact checker,
and the noise that corrupt.py and improve.py put into solutions.

A problem is made from its operands alone; its text is prompt + completion, where the completion
is the chain of thought, then '#', the final answer, and '$' (the stop token). The checker reads
only what stands between the last '#' and '$' and compares it with the truth recomputed from the
operands; check_chain checks every step as well.

Formats (difficulty = the number of digits n of the operands; every stage takes --fmt):
  reverse  numbers least-significant digit first; a carry row, then the answer row, digit i of
           each aligned with digit i of the operands: what abacus positions (model.py) read.
  plain    numbers as usual; a line per column.
  answer   '#answer$' alone: no chain of thought.
  steps    reverse digits, a line per column ('4+7+0=11;').
  compact  as steps, a fixed-size step per column ('470>11;').
  hints    as reverse, a letter naming each digit's place before it ('a4b3' is 34; <= 26 digits).
"""

import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable

FORMATS = ("reverse", "plain", "answer", "steps", "compact", "hints")
COLUMN_FORMATS = ("steps", "compact")  # a line per column: only tasks with columns have them


@dataclass
class Problem:
    task: str
    digits: int
    operands: list
    fmt: str
    prompt: str
    completion: str  # chain of thought + '#' + answer + '$'
    answer: str  # the right answer, plain decimal digits


# ----------------------------------------------------------------------------- tasks


def num(x, fmt, width=0):
    """A number as text in the format's digit order (zero-padded to width)."""
    s = str(x).zfill(width)
    return s if fmt == "plain" else hinted(s[::-1], fmt)


def hinted(digits, fmt):
    """Least-significant-first digits with an index letter before each one in the hints format."""
    if fmt != "hints":
        return digits
    if len(digits) > 26:
        raise ValueError(f"the hints format writes numbers of at most 26 digits, not {len(digits)}")
    return "".join(chr(ord("a") + i) + d for i, d in enumerate(digits))


def random_operand(n, rng):
    return rng.randrange(0, 10) if n == 1 else rng.randrange(10 ** (n - 1), 10**n)


def n_digit_numbers(n):
    """How many numbers have n digits."""
    return 10 if n == 1 else 9 * 10 ** (n - 1)


def solve_carry(ops, fmt, fault=None, rng=None, mul=False):
    """a+b (or a*b, b one digit), column by column with a carry. fault names a column whose carry
    goes wrong (dynamic noise): the wrong carry is carried on, as a real mistake would be.
    -> (chain of thought, answer text, how many steps can go wrong)"""
    a, b = ops
    n = len(str(a)) if mul else len(str(max(a, b)))
    da = [int(c) for c in str(a).zfill(n)[::-1]]
    db = [b] * n if mul else [int(c) for c in str(b).zfill(n)[::-1]]
    carry = 0
    carries = [0]  # the carry into each column, and out of the last
    out = []  # the answer's digits
    lines = []  # a line per column (steps, compact)
    for i in range(n):
        s = da[i] * db[i] + carry if mul else da[i] + db[i] + carry
        if fmt == "compact":
            lines.append(f"{da[i]}{db[i]}{carry}>{s % 10}{s // 10};")
        else:
            lines.append(f"{da[i]}{'*' if mul else '+'}{db[i]}+{carry}={s};")
        carry = s // 10
        if fault == i:
            carry = (carry + rng.randrange(1, 9)) % 9 if mul else 1 - carry
        out.append(s % 10)
        carries.append(carry)
    out.append(carry)
    value = int("".join(map(str, out[::-1])))
    if fmt in ("reverse", "hints"):  # one carry row, aligned digit for digit with the answer
        return hinted("".join(map(str, carries)), fmt) + ";", num(value, fmt, n + 1), n
    return "".join(lines), num(value, fmt, 0 if fmt == "plain" else n + 1), n


@dataclass(frozen=True)
class Task:
    """What a task is. To add one, write these and put it in TASKS: every stage, the checker and the
    tests then know it (README, "Add a task"). Answers are numbers, written with num()."""

    operands: Callable  # (n, rng) -> operands of n digits
    prompt: Callable  # (operands as the format writes them) -> the prompt, ending in '='
    solve: Callable  # (operands, fmt, fault, rng) -> (chain, answer, steps): see solve_carry
    truth: Callable  # operands -> the right answer in plain decimal
    n_problems: Callable  # n -> how many different problems of n digits there are
    max_digits: int  # train.py's default N and steps: smart >= 97% at every length 1..N, measured
    steps: int
    columns: bool = False  # written column by column too (the steps and compact formats)


TASKS = {
    "add": Task(
        operands=lambda n, rng: [random_operand(n, rng), random_operand(n, rng)],
        prompt=lambda f: f"{f[0]}+{f[1]}=",
        solve=solve_carry,
        truth=lambda ops: str(ops[0] + ops[1]),
        n_problems=lambda n: n_digit_numbers(n) ** 2,
        max_digits=8,
        steps=1800,
        columns=True,
    ),
    "mul": Task(
        operands=lambda n, rng: [random_operand(n, rng), rng.randrange(2, 10)],  # n x 1 digit
        prompt=lambda f: f"{f[0]}*{f[1]}=",
        truth=lambda ops: str(ops[0] * ops[1]),
        solve=lambda ops, fmt, fault=None, rng=None: solve_carry(ops, fmt, fault, rng, mul=True),
        n_problems=lambda n: n_digit_numbers(n) * 8,
        max_digits=6,
        steps=4500,
        columns=True,
    ),
}


def random_operands(task, n, rng):
    return TASKS[task].operands(n, rng)


def truth(task, ops):
    """The right final answer, recomputed from the operands."""
    return TASKS[task].truth(ops)


def formats_of(task):
    """The formats a task is written in: steps and compact only where it has columns."""
    return [f for f in FORMATS if f not in COLUMN_FORMATS or TASKS[task].columns]


def check_format(task, fmt):
    """A ValueError for a task or format that does not exist, or a format the task lacks."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    if fmt not in formats_of(task):
        raise ValueError(f"{task} has no {fmt} format; choose from {', '.join(formats_of(task))}")


def make_problem(task, ops, fmt="reverse", digits=None, fault=None, rng=None):
    check_format(task, fmt)
    t = TASKS[task]
    cot, answer, _ = t.solve(ops, fmt, fault, rng)
    return Problem(
        task,
        digits or len(str(max(ops))),
        list(ops),
        fmt,
        t.prompt([num(x, fmt) for x in ops]),
        ("" if fmt == "answer" else cot) + "#" + answer + "$",
        t.truth(ops),
    )


# ----------------------------------------------------------------------------- checker


def parse_answer(fmt, completion):
    """The final answer of a completion as plain decimal text, or None if it has none: only the
    text between the last '#' and the following '$' is read."""
    if "#" not in completion:
        return None
    text = completion.rsplit("#", 1)[1].split("$", 1)[0]
    if fmt == "hints":  # the hints are read past, not checked
        text = "".join(c for c in text if not ("a" <= c <= "z"))
    return str(int(text if fmt == "plain" else text[::-1])) if text.isdigit() else None


def check(task, fmt, ops, completion):
    """-> (parsed answer or None, correct?)"""
    answer = parse_answer(fmt, completion)
    return answer, answer == truth(task, ops)


def check_chain(task, fmt, ops, completion):
    """The whole chain of thought checked, not only the answer: a format writes exactly one
    chain for given operands, each step computed from the operands and the steps before it, so a
    completion is right step by step when it is that chain, answer and '$' included. This is what
    a training target must pass; the reported metric stays check()'s exact answer."""
    return completion == make_problem(task, ops, fmt).completion


def record_of(p, completion):
    """The record of a completion: its parsed answer, correct (the answer is right: the reported
    metric) and verified (every step is right too: what a training target must be)."""
    answer, ok = check(p.task, p.fmt, p.operands, completion)
    return {
        "digits": p.digits,
        "operands": p.operands,
        "completion": completion,
        "answer": answer,
        "correct": ok,
        "verified": ok and check_chain(p.task, p.fmt, p.operands, completion),
    }


def accuracy_by_digits(records):
    """{"digits": share correct}, shortest first; keyed by text, as results.json keys it."""
    acc = {}
    for r in records:
        acc.setdefault(r["digits"], []).append(r["correct"])
    return {str(n): sum(v) / len(v) for n, v in sorted(acc.items())}


def percents(acc):
    """'1:100% 2:96% ...' for a line of output."""
    return " ".join(f"{n}:{100 * a:.0f}%" for n, a in acc.items())


def chain_of(completion):
    """The chain of thought of a completion: everything before its answer."""
    return completion.rsplit("#", 1)[0] if "#" in completion else completion.rstrip("$")


def answer_of(completion):
    """The answer part of a completion: '#', the answer, '$'."""
    return completion[completion.rindex("#") :] if "#" in completion else "#$"


def near_miss(answer, right):
    """A wrong answer of the right length with at most two wrong digits: something to correct."""
    return (
        answer is not None
        and len(answer) == len(right)
        and 0 < sum(a != b for a, b in zip(answer, right)) <= 2
    )


MISTAKES = {
    "cot_wrong": "chain of thought wrong",
    "answer_wrong": "chain right, answer wrong",  # kind: its label
    "wrong_length": "wrong length",
    "near_miss": "near miss (1-2 digits)",
    "no_answer": "no answer",
}


def mistake_shares(records, task, fmt):
    """How many records are wrong, and the share of them of each kind (mistake_kinds)."""
    wrong = [r for r in records if not r["correct"]]
    kinds = Counter(
        k for r in wrong for k in mistake_kinds(task, fmt, r["operands"], r["completion"])
    )
    return {"wrong": len(wrong), **{k: kinds[k] / max(1, len(wrong)) for k in MISTAKES}}


def mistake_kinds(task, fmt, ops, completion):
    """Why a completion is wrong, for the error anatomy: where the mistake is (cot_wrong: its
    chain of thought differs from the one recomputed from the operands; answer_wrong: the chain is
    right, the answer is not) and what the answer looks like (no_answer; wrong_length; near_miss).
    -> a set of kinds, empty for a right completion."""
    answer, ok = check(task, fmt, ops, completion)
    if ok:
        return set()
    right_chain = chain_of(make_problem(task, ops, fmt).completion)
    kinds = {"cot_wrong" if chain_of(completion) != right_chain else "answer_wrong"}
    right = truth(task, ops)
    if answer is None:
        kinds.add("no_answer")
    elif len(answer) != len(right):
        kinds.add("wrong_length")
    elif near_miss(answer, right):
        kinds.add("near_miss")
    return kinds


# ----------------------------------------------------------------------------- data sets


def _seed(*parts):
    return zlib.crc32(":".join(map(str, parts)).encode())  # stable across runs, unlike hash()


def eval_operands(task, n, size=200, seed=0):
    """A fixed, seeded evaluation set at n digits. At small n it takes at most a fifth of all
    problems, so that training still has problems of that length left."""
    size = min(size, TASKS[task].n_problems(n) // 5)
    rng = random.Random(_seed("eval", task, n, seed))
    seen = set()
    out = []
    while len(out) < size:
        ops = random_operands(task, n, rng)
        if tuple(ops) not in seen:
            seen.add(tuple(ops))
            out.append(ops)
    return out


def eval_set(task, n, fmt="reverse", size=200, seed=0):
    return [make_problem(task, ops, fmt, n) for ops in eval_operands(task, n, size, seed)]


def eval_problems(task, fmt, lengths, size):
    """The fixed evaluation problems of every length in `lengths`, `size` per length."""
    return [p for n in lengths for p in eval_set(task, n, fmt, size)]


EVAL_MAX = 200  # the largest evaluation set per length: training never sees one of its problems


def eval_exclusions(task, max_digits):
    """The operands of every evaluation set of 1..max_digits digits, as tuples."""
    return {
        tuple(ops) for n in range(1, max_digits + 1) for ops in eval_operands(task, n, EVAL_MAX)
    }


def fresh_problems(task, fmt, n, count, seed, seen):
    """count n-digit problems from a stream of their own, none evaluated, none in `seen` (which
    they join): a length can be labelled round after round, on new problems each time."""
    rng = random.Random(_seed("fresh", task, n, seed))
    evaluated = {tuple(ops) for ops in eval_operands(task, n, EVAL_MAX)}
    problems = []
    for _ in range(100 * count):  # a short length may run out of new problems
        ops = tuple(random_operands(task, n, rng))
        if ops not in seen and ops not in evaluated:
            seen.add(ops)
            problems.append(make_problem(task, ops, fmt, n))
        if len(problems) == count:
            break
    return problems


class ProblemStream:
    """Random training problems of min_digits..max_digits digits, never one of an evaluation set."""

    def __init__(self, task, fmt, min_digits, max_digits, seed=0):
        self.task = task
        self.fmt = fmt
        self.lo, self.hi = min_digits, max_digits
        self.rng = random.Random(_seed("train", task, seed))
        self.exclude = eval_exclusions(task, max_digits)

    def sample(self):
        n = self.rng.randint(self.lo, self.hi)
        while True:
            ops = random_operands(self.task, n, self.rng)
            if tuple(ops) not in self.exclude:
                return make_problem(self.task, ops, self.fmt, n)


# ----------------------------------------------------------------------------- the learner's prompt

KEEP = "$"  # the learner's whole answer when it keeps the attempt as it is


def correction_prompt(prompt, attempt, longest_number=None, max_len=None):
    """What the learner reads: the problem, an attempt at it (a completion, '$' dropped), then '>'.
    It answers with a whole new completion, or with KEEP alone to leave the attempt as it is.
    A broken model can write an attempt the learner cannot read: a number longer than any it
    indexes (abacus positions), or so long that no room is left to answer. Such a number is cut
    to longest_number digits, the prompt to max_len characters: the attempt is wrong either way."""
    attempt = attempt.rstrip("$")
    if longest_number is not None:
        too_long = r"\d{%d,}" % (longest_number + 1)
        attempt = re.sub(too_long, lambda m: m.group()[:longest_number], attempt)
    if max_len is not None:
        attempt = attempt[: max(0, max_len - len(prompt) - 1)]
    return prompt + attempt + ">"


# ----------------------------------------------------------------------------- noise
# Havrilla & Iyer (2024): static noise is a local mistake that nothing downstream depends on;
# dynamic noise is a mistake made during the computation and carried through every later step.


def with_completion(p, completion):
    return Problem(p.task, p.digits, p.operands, p.fmt, p.prompt, completion, p.answer)


def answer_noise(p, rng, n_digits=(1, 2)):
    """A near miss: the right completion with 1 or 2 digits of the final answer off by one, the way
    smart's own answers past N go wrong (a local slip; the chain of thought is left as it is)."""
    ans = list(answer_of(p.completion)[1:-1])
    spots = [i for i, c in enumerate(ans) if c.isdigit()]
    for i in rng.sample(spots, min(len(spots), rng.choice(n_digits))):
        ans[i] = str((int(ans[i]) + rng.choice((1, 9))) % 10)
    return with_completion(p, chain_of(p.completion) + "#" + "".join(ans) + "$")


def static_noise(p, rate, rng):
    """Each digit of the chain of thought (not the final answer) is replaced with probability
    `rate` by a different digit. The answer stays right."""
    cot = "".join(
        str((int(c) + rng.randrange(1, 10)) % 10) if c.isdigit() and rng.random() < rate else c
        for c in chain_of(p.completion)
    )
    return with_completion(p, cot + answer_of(p.completion))


def dynamic_noise(p, rng, rate=1.0, tries=5):
    """With probability `rate`, one step of the computation goes wrong and every later step
    follows from the wrong value, so the answer is wrong. A fault whose answer comes out right
    anyway is drawn again, up to `tries` times a step; where no step can go wrong, p comes back."""
    if p.fmt == "answer" or rng.random() >= rate:
        return p
    _, _, n = TASKS[p.task].solve(p.operands, p.fmt)
    # written a line per column, the last column's carry shows only in the answer: no fault there
    lines = TASKS[p.task].columns and p.fmt not in ("reverse", "hints")
    steps = list(range(n - 1 if lines and n > 1 else n))
    rng.shuffle(steps)
    for fault in steps:
        for _ in range(tries):
            q = make_problem(p.task, p.operands, p.fmt, p.digits, fault=fault, rng=rng)
            if not check(p.task, p.fmt, p.operands, q.completion)[1]:
                return q
    return p


# ----------------------------------------------------------------------------- tokenizer and run


class CharTokenizer:
    """One token per character over a fixed, saved vocabulary. Digits come first (ids 1..10) so
    the model can tell digits apart by id range; id 0 is padding and never appears in text."""

    PAD = "\x00"
    VOCAB = PAD + "0123456789" + "+-*/=<>|,;:#$%()[]. \n" + "abcdefghijklmnopqrstuvwxyz"

    def __init__(self, vocab=None):
        self.vocab = vocab or self.VOCAB
        self.stoi = {c: i for i, c in enumerate(self.vocab)}
        self.vocab_size = len(self.vocab)
        self.pad_id = 0
        self.digit_lo = self.stoi["0"]
        self.stop_id = self.stoi["$"]  # every completion ends with '$'

    def encode(self, text):
        bad = sorted(set(c for c in text if c not in self.stoi or c == self.PAD))
        if bad:
            raise ValueError(f"characters outside the vocabulary: {''.join(bad)!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids if i != self.pad_id)

    def config(self):
        return {"kind": "char", "vocab": self.vocab}


@dataclass
class DataConfig:
    """What a run is trained on, saved in every checkpoint of the run."""

    task: str
    fmt: str
    max_digits: int
    tokenizer: dict
