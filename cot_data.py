"""
Algorithmic chain-of-thought data for nanocorrect: tasks, CoT formats, the tokenizer,
the exact answer checker, and noise injectors.

A problem is generated from its operands alone; its text is prompt + completion, where the
completion is the chain of thought, then '#', the final answer, and '$' (the stop token).
The checker reads only what stands between the last '#' and '$' of a completion and compares
it with the truth recomputed from the operands; check_chain checks every step as well.

Formats (difficulty = number of digits n of each operand):
  reverse  every number written least-significant digit first; addition and multiplication
           write one carry row, then the answer row, so digit i of the answer depends on digit i
           of the operands and of the carry row: with abacus positions (model.py) that alignment
           is what lets a model trained on 1..N digits go past N.
  plain    numbers as usual (most significant first); one line per step.
  answer   no chain of thought: '#answer$' straight after the prompt (reverse digit order).
  steps    numbers least-significant digit first, and one line per column ('4+7+0=11;');
           addition and multiplication only (the other tasks have no columns).
  compact  as steps, each column a fixed-size step 'a b carry > sum carry' without signs ('470>11;').
  hints    as reverse, with an index hint before every digit: a letter naming its significance
           ('a4b3' is 34), so a model can match digits of the same column by content rather than
           by position (Zhou et al. 2024). Numbers of up to 26 digits.
Only experiments/sweep.py uses steps, compact and hints; it is what picked reverse as the default.
"""
import random
import re
import zlib
from dataclasses import dataclass

TASKS = ("add", "mul", "sort", "median", "gcd")
FORMATS = ("reverse", "plain", "answer", "steps", "compact", "hints")
COLUMN_FORMATS = ("steps", "compact")   # column by column: only addition and multiplication have columns
LIST_LEN = {"sort": 4, "median": 5}     # how many numbers a sort / median problem holds


@dataclass
class Problem:
    task: str
    digits: int
    operands: list
    fmt: str
    prompt: str
    completion: str                     # chain of thought + '#' + answer + '$'
    answer: str                         # plain decimal digits (comma-separated for sort)

    @property
    def text(self):
        return self.prompt + self.completion


# ----------------------------------------------------------------------------- tasks

def num(x, fmt, width=0):
    """A number as text in the format's digit order (zero-padded to width)."""
    s = str(x).zfill(width)
    return s if fmt == "plain" else hinted(s[::-1], fmt)


def hinted(digits, fmt):
    """Least-significant-first digits with an index hint before each one in the hints format."""
    if fmt != "hints":
        return digits
    if len(digits) > 26:
        raise ValueError(f"the hints format writes numbers of at most 26 digits, not {len(digits)}")
    return "".join(chr(ord("a") + i) + d for i, d in enumerate(digits))


def random_operand(n, rng, lowest=0):
    return rng.randrange(lowest, 10) if n == 1 else rng.randrange(10 ** (n - 1), 10 ** n)


def random_operands(task, n, rng):
    if task == "add":
        return [random_operand(n, rng), random_operand(n, rng)]
    if task == "mul":                    # n digits times one digit
        return [random_operand(n, rng), rng.randrange(2, 10)]
    if task == "gcd":   # a common factor of 1..n-1 digits first: drawn independently, most pairs have gcd 1
        g = random_operand(rng.randint(1, max(1, n - 1)), rng, 1)
        lo, hi = -(-10 ** (n - 1) // g) if n > 1 else 1, (10 ** n - 1) // g
        return [g * rng.randint(lo, hi), g * rng.randint(lo, hi)]
    return [random_operand(n, rng) for _ in range(LIST_LEN[task])]


def problem_space(task, n):
    """How many different problems a task has at n digits."""
    per = 10 if n == 1 else 9 * 10 ** (n - 1)
    if task == "mul":
        return per * 8
    if task == "gcd":
        return (9 if n == 1 else per) ** 2
    return per ** (2 if task == "add" else LIST_LEN[task])


# A solver computes the chain of thought step by step. `fault` names a step that goes wrong
# (dynamic noise): the wrong value is carried into every later step, as a real mistake would be.

def solve_carry(task, ops, fmt, fault=None, rng=None):
    """Addition (a+b) or multiplication by one digit (a*b), column by column with a carry."""
    a, b = ops
    n = len(str(max(a, b))) if task == "add" else len(str(a))
    da = [int(c) for c in str(a).zfill(n)[::-1]]
    db = [int(c) for c in str(b).zfill(n)[::-1]] if task == "add" else [b] * n
    sym = "+" if task == "add" else "*"
    carry, carries, out, lines = 0, [0], [], []
    for i in range(n):
        s = da[i] + db[i] + carry if task == "add" else da[i] * db[i] + carry
        lines.append(f"{da[i]}{db[i]}{carry}>{s % 10}{s // 10};" if fmt == "compact" else
                     f"{da[i]}{sym}{db[i]}+{carry}={s};")
        carry = s // 10
        if fault == i:                   # a wrong carry, carried on
            carry = 1 - carry if task == "add" else (carry + rng.randrange(1, 9)) % 9
        out.append(s % 10)
        carries.append(carry)
    out.append(carry)
    value = int("".join(map(str, out[::-1])))
    if fmt in ("reverse", "hints"):      # one carry row, aligned digit for digit with the answer
        return hinted("".join(map(str, carries)), fmt) + ";", num(value, fmt, n + 1), n
    return "".join(lines), num(value, fmt, 0 if fmt == "plain" else n + 1), n


def solve_select(task, ops, fmt, fault=None, rng=None):
    """Sorting (or the median) by selection: each line takes the smallest number and rewrites
    the numbers that remain, so every line holds all the work still to do."""
    rest, picked, lines = list(ops), [], []
    stop = len(ops) if task == "sort" else len(ops) // 2 + 1
    while len(picked) < stop:
        m = min(rest)
        if fault == len(picked) and len(rest) > 1:   # picks the second smallest instead
            m = sorted(rest)[1]
        rest.remove(m)
        picked.append(m)
        lines.append(num(m, fmt) + "|" + ",".join(num(x, fmt) for x in rest) + ";")
    answer = ",".join(num(x, fmt) for x in picked) if task == "sort" else num(picked[-1], fmt)
    return "".join(lines), answer, min(stop, len(ops) - 1)   # the last pick of a sort has no choice


def solve_gcd(task, ops, fmt, fault=None, rng=None):
    """Euclid's algorithm: a%b=r, then (b, r), until the remainder is 0."""
    a, b = ops
    lines, i = [], 0
    while b:
        r = a % b
        if fault == i and b > 1:                     # a wrong remainder, carried on
            r = (r + rng.randrange(1, b)) % b
        lines.append(f"{num(a, fmt)}%{num(b, fmt)}={num(r, fmt)};")
        a, b, i = b, r, i + 1
    return "".join(lines), num(a, fmt), i


SOLVERS = {"add": solve_carry, "mul": solve_carry, "sort": solve_select, "median": solve_select,
           "gcd": solve_gcd}


def make_prompt(task, ops, fmt):
    f = [num(x, fmt) for x in ops]
    if task == "add":
        return f"{f[0]}+{f[1]}="
    if task == "mul":
        return f"{f[0]}*{f[1]}="
    return f"{task}:{','.join(f)}="


def formats_of(task):
    """The formats a task is written in: steps and compact write columns, and sort, median and gcd
    have none (they would write exactly what reverse writes)."""
    return [f for f in FORMATS if f not in COLUMN_FORMATS or task in ("add", "mul")]


def check_format(task, fmt):
    """A ValueError for a format the task is not written in."""
    if fmt not in formats_of(task):
        raise ValueError(f"{task} has no {fmt} format; choose from {', '.join(formats_of(task))}")


def make_problem(task, ops, fmt="reverse", digits=None, fault=None, rng=None):
    if task not in SOLVERS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    check_format(task, fmt)
    cot, answer, _ = SOLVERS[task](task, ops, fmt, fault, rng)
    if fmt == "answer":
        cot = ""
    digits = digits or len(str(max(ops)))
    return Problem(task, digits, list(ops), fmt, make_prompt(task, ops, fmt), cot + "#" + answer + "$",
                   truth(task, ops))


def truth(task, ops):
    """The right final answer, recomputed from the operands with plain Python."""
    import math
    if task == "add":
        return str(ops[0] + ops[1])
    if task == "mul":
        return str(ops[0] * ops[1])
    if task == "gcd":
        return str(math.gcd(*ops))
    s = sorted(ops)
    return ",".join(map(str, s)) if task == "sort" else str(s[len(s) // 2])


# ----------------------------------------------------------------------------- checker

def parse_answer(task, fmt, completion):
    """The final answer of a completion as plain decimal text, or None if it has none: only the
    text between the last '#' and the following '$' is read."""
    if "#" not in completion:
        return None
    text = completion.rsplit("#", 1)[1].split("$", 1)[0]
    if fmt == "hints":                  # the hints are read past, not checked
        text = "".join(c for c in text if not ("a" <= c <= "z"))
    parts = text.split(",") if task == "sort" else [text]
    if not all(p.isdigit() for p in parts):
        return None
    return ",".join(str(int(p if fmt == "plain" else p[::-1])) for p in parts)


def check(task, fmt, ops, completion):
    """-> (parsed answer or None, correct?)"""
    answer = parse_answer(task, fmt, completion)
    return answer, answer == truth(task, ops)


def check_chain(task, fmt, ops, completion):
    """The whole chain of thought checked, not only the answer: a format writes exactly one chain
    for given operands, each step computed from the operands and the steps before it (the solvers
    above), so a completion is right step by step when it is that chain, answer and '$' included.
    This is what a training target must pass; the reported metric stays check()'s exact answer."""
    return completion == make_problem(task, ops, fmt).completion


MISTAKES = ("cot_wrong", "answer_wrong", "wrong_length", "near_miss", "no_answer")


def mistake_kinds(task, fmt, ops, completion):
    """Why a completion is wrong, for the error anatomy: where the mistake is (cot_wrong: its chain of
    thought differs from the one recomputed from the operands; answer_wrong: the chain is right,
    the answer is not) and what the answer looks like (no_answer; wrong_length; near_miss: the right
    length with one or two wrong digits). -> a set of kinds, empty for a right completion."""
    answer, ok = check(task, fmt, ops, completion)
    if ok:
        return set()
    cot = completion.rsplit("#", 1)[0] if "#" in completion else completion.rstrip("$")
    right_cot = make_problem(task, ops, fmt).completion.rsplit("#", 1)[0]
    kinds = {"cot_wrong" if cot != right_cot else "answer_wrong"}
    right = truth(task, ops)
    if answer is None:
        kinds.add("no_answer")
    elif len(answer) != len(right):
        kinds.add("wrong_length")
    elif sum(a != b for a, b in zip(answer, right)) <= 2:
        kinds.add("near_miss")
    return kinds


# ----------------------------------------------------------------------------- data sets

def _seed(*parts):
    return zlib.crc32(":".join(map(str, parts)).encode())   # stable across runs, unlike hash()


def eval_operands(task, n, size=200, seed=0):
    """A fixed, seeded evaluation set at n digits. At small n it takes at most a fifth of all
    problems, so that training still has problems of that length left."""
    size = min(size, problem_space(task, n) // 5)
    rng, seen, out = random.Random(_seed("eval", task, n, seed)), set(), []
    while len(out) < size:
        ops = random_operands(task, n, rng)
        if tuple(ops) not in seen:
            seen.add(tuple(ops))
            out.append(ops)
    return out


def eval_set(task, n, fmt="reverse", size=200, seed=0):
    return [make_problem(task, ops, fmt, n) for ops in eval_operands(task, n, size, seed)]


class ProblemStream:
    """Random training problems of min_digits..max_digits digits, never one from `exclude`
    (a set of operand tuples, normally every evaluation set)."""

    def __init__(self, task, fmt, min_digits, max_digits, seed=0, exclude=()):
        self.task, self.fmt, self.lo, self.hi = task, fmt, min_digits, max_digits
        self.rng, self.exclude = random.Random(_seed("train", task, seed)), set(exclude)

    def operands(self):
        n = self.rng.randint(self.lo, self.hi)
        while True:
            ops = random_operands(self.task, n, self.rng)
            if tuple(ops) not in self.exclude:
                return n, ops

    def sample(self):
        n, ops = self.operands()
        return make_problem(self.task, ops, self.fmt, n)


def eval_exclusions(task, max_digits, size=200, seed=0):
    return {tuple(ops) for n in range(1, max_digits + 1) for ops in eval_operands(task, n, size, seed)}


KEEP = "$"   # the learner's whole answer when it keeps the attempt as it is


def chain_of(completion):
    """The chain of thought of a completion: everything before its answer."""
    return completion.rsplit("#", 1)[0] if "#" in completion else completion.rstrip("$")


def answer_of(completion):
    """The answer part of a completion: '#', the answer, '$'."""
    return completion[completion.rindex("#"):] if "#" in completion else "#$"


def correction_prompt(prompt, attempt, max_run=None, max_len=None):
    """What the learner reads: the problem, an attempt at it (a completion, '$' dropped), then '>'.
    It answers with a whole new completion, or with KEEP alone to leave the attempt as it is.
    A broken model can write an attempt the learner cannot read: a digit run longer than any number
    it indexes (abacus positions), or so long that no room is left to answer. max_run cuts such a
    run to max_run digits, max_len the whole prompt to max_len characters - it is wrong either way."""
    attempt = attempt.rstrip("$")
    if max_run is not None:
        attempt = re.sub(r"\d{%d,}" % (max_run + 1), lambda m: m.group()[:max_run], attempt)
    if max_len is not None:
        attempt = attempt[:max(0, max_len - len(prompt) - 1)]
    return prompt + attempt + ">"


# ----------------------------------------------------------------------------- noise
# Havrilla & Iyer (2024): static noise is a local mistake that nothing downstream depends on;
# dynamic noise is a mistake made during the computation and carried through every later step.

def _split(p):
    cot, rest = p.completion.rsplit("#", 1)
    return cot, "#" + rest


def answer_noise(p, rng, n_digits=(1, 2)):
    """A near miss: the right completion with 1 or 2 digits of the final answer off by one, the way
    smart's own answers past N go wrong (a local slip; the chain of thought is left as it is)."""
    cot, tail = _split(p)
    ans = list(tail[1:-1])
    spots = [i for i, c in enumerate(ans) if c.isdigit()]
    for i in rng.sample(spots, min(len(spots), rng.choice(n_digits))):
        ans[i] = str((int(ans[i]) + rng.choice((1, 9))) % 10)
    return Problem(p.task, p.digits, p.operands, p.fmt, p.prompt, cot + "#" + "".join(ans) + "$", p.answer)


def static_noise(p, rate, rng):
    """Each digit of the chain of thought (not the final answer) is replaced with probability
    `rate` by a different digit. The answer stays right."""
    cot, tail = _split(p)
    cot = "".join(str((int(c) + rng.randrange(1, 10)) % 10) if c.isdigit() and rng.random() < rate else c
                  for c in cot)
    return Problem(p.task, p.digits, p.operands, p.fmt, p.prompt, cot + tail, p.answer)


def drop_lines(p, rate, rng):
    """Each line of the chain of thought is left out with probability `rate`."""
    cot, tail = _split(p)
    kept = [line + ";" for line in cot.split(";")[:-1] if rng.random() >= rate]
    return Problem(p.task, p.digits, p.operands, p.fmt, p.prompt, "".join(kept) + tail, p.answer)


def fault_steps(p):
    """The steps where dynamic noise may put its fault: every step whose wrong value shows in a later
    written step or in the answer. In plain, steps and compact a column's carry is written only in
    the next column, so the last column (whose carry only the answer would show) is left out."""
    _, _, n = SOLVERS[p.task](p.task, p.operands, p.fmt)
    if p.task in ("add", "mul") and p.fmt not in ("reverse", "hints") and n > 1:
        return range(n - 1)
    return range(n)


def dynamic_noise(p, rng, rate=1.0, tries=5):
    """With probability `rate`, one step of the computation goes wrong and every later step follows
    from the wrong value, so the answer is wrong. A fault whose answer comes out right anyway (Euclid
    can reach the right gcd from a wrong remainder; a median can survive a wrong early pick; a
    duplicate number picked twice changes nothing) is drawn again, up to `tries` times per step.
    Where no step can go wrong (gcd(a, 1), a median of equal numbers) the problem is returned as it
    is: callers that need a wrong one check the answer."""
    if p.fmt == "answer" or rng.random() >= rate:
        return p
    steps = list(fault_steps(p))
    rng.shuffle(steps)
    for fault in steps:                 # each step in turn: in a median only the late picks matter
        for _ in range(tries):
            q = make_problem(p.task, p.operands, p.fmt, p.digits, fault=fault, rng=rng)
            if not check(p.task, p.fmt, p.operands, q.completion)[1]:
                return q
    return p


def noise_from_spec(spec, rng=None):
    """'none', 'static:R' (R of the CoT digits of every sample), 'lines:R' (each CoT line dropped with
    probability R) or 'dynamic:R' (one carried error in R of the samples) -> problem -> problem, or None.
    rng: the random.Random the noise draws from (its state is what a resumed run restores)."""
    if spec == "none":
        return None
    kind, _, rate = spec.partition(":")
    try:
        rate = float(rate)
    except ValueError:
        rate = -1.0
    if kind not in ("static", "lines", "dynamic") or not 0 <= rate <= 1:
        raise ValueError(f"bad noise {spec!r}: use none, static:R, lines:R or dynamic:R with 0 <= R <= 1")
    rng = rng or random.Random(0)
    if kind == "static":
        return lambda p: static_noise(p, rate, rng)
    return (lambda p: drop_lines(p, rate, rng)) if kind == "lines" else (lambda p: dynamic_noise(p, rng, rate))


# ----------------------------------------------------------------------------- tokenizer

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
        self.stop_id = self.stoi["$"]      # every completion ends with '$'

    def encode(self, text):
        bad = sorted(set(c for c in text if c not in self.stoi or c == self.PAD))
        if bad:
            raise ValueError(f"characters outside the vocabulary: {''.join(bad)!r}")
        return [self.stoi[c] for c in text]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids if i != self.pad_id)

    def config(self):
        return {"kind": "char", "vocab": self.vocab}
