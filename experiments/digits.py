"""
Which digit goes wrong, and with what? Reads a run's results.json (addition, reverse format) and
looks at every wrong answer digit past N in answers of the right length, where the carry row is
right: the model had every number it needed in front of it and still wrote the wrong digit.

Digit i of the answer should be (a_i + b_i + c_i) mod 10, c_i the carry into column i (the carry
row). A wrong digit w is explained, when it is, by one of these slips (a digit can fit several):
    carry of a neighbour   w = (a_i + b_i + c_j) mod 10, j = i-1 or i+1, where c_j differs from c_i
    operand of a neighbour w = (a_j + b_i + c_i) or (a_i + b_j + c_i) mod 10, j = i-1 or i+1
    next column's digit    w = the right answer digit of column i+1 (it runs a column ahead)
    previous column's digit w = the right answer digit of column i-1 (it lags a column behind)
Beside each share is what a wrong digit drawn at random (any of the 9 wrong values) would give:
a slip far above its chance is how the model goes wrong, not an accident of counting.
For a learner handed smart's output, a second table: does it fix smart's wrong answer, repeat it,
or write another wrong one?

    python -m experiments.digits                              # out/results.json, every model
    python -m experiments.digits --results=out/arms/rewrite-s3/results.json
    --models=smart,learner_on_smart
"""

import json
from dataclasses import dataclass

from cli import BadInput, opt, parse_config, run_main
from cot_data import make_problem
from report import markdown_table

SLIPS = (
    "carry of a neighbour",
    "operand of a neighbour",
    "next column's digit",
    "previous column's digit",
)


@dataclass
class DigitsConfig:
    results: str = opt(
        "out/results.json", "a results.json written by evaluate.py (addition, reverse format)"
    )
    models: str = opt("", "models to study, comma-separated (empty: every model in the file)")


def columns(a, b, n):
    """Digits (least significant first) of a and b, and the carry row and answer row that the
    reverse format writes for them (n+1 columns each)."""
    row, _, answer = make_problem("add", [a, b], "reverse", n).completion.partition(";#")
    A, B = ([int(c) for c in str(x)[::-1].ljust(n + 2, "0")] for x in (a, b))
    return A, B, [int(c) for c in row], [int(c) for c in answer.rstrip("$")]


def slip_values(A, B, carry, ans, i):
    """For each slip, the digits column i would get from it (the right digit excluded)."""
    near = [j for j in (i - 1, i + 1) if 0 <= j < len(ans)]
    vals = {
        "carry of a neighbour": {
            (A[i] + B[i] + carry[j]) % 10 for j in near if carry[j] != carry[i]
        },
        "operand of a neighbour": {(A[j] + B[i] + carry[i]) % 10 for j in near}
        | {(A[i] + B[j] + carry[i]) % 10 for j in near},
        "next column's digit": {ans[j] for j in near if j > i},
        "previous column's digit": {ans[j] for j in near if j < i},
    }
    return {k: v - {ans[i]} for k, v in vals.items()}


def study(records, N):
    """-> one row of counts for a model's records past N."""
    wrong = [r for r in records if r["digits"] > N and not r["correct"]]
    digits, inside, hits, chance, lengths = (
        0,
        0,
        dict.fromkeys(SLIPS, 0),
        dict.fromkeys(SLIPS, 0.0),
        0,
    )
    for r in wrong:
        n = r["digits"]
        A, B, carry, ans = columns(*r["operands"], n)
        row, _, rest = r["completion"].partition(";#")
        written = rest.rstrip("$")
        if len(written) != len(ans) or not written.isdigit():
            lengths += 1
            continue
        if row != "".join(map(str, carry)):  # the carry row is wrong: a different mistake
            continue
        for i, w in enumerate(map(int, written)):
            if w == ans[i]:
                continue
            digits += 1
            inside += i < N
            for slip, vals in slip_values(A, B, carry, ans, i).items():
                hits[slip] += w in vals
                chance[slip] += len(vals) / 9
    return {
        "wrong": len(wrong),
        "wrong length": lengths,
        "digits": digits,
        "inside": inside,
        "hits": hits,
        "chance": chance,
    }


def handed(smart, model, N):
    """What a model handed smart's output did with it past N: [fixed, same wrong answer, another
    wrong answer] of smart's wrong answers, [kept, broken] of its right ones."""
    wrong, right = [0, 0, 0], [0, 0]
    for s, m in zip(smart, model):
        if s["digits"] <= N:
            continue
        if s["correct"]:
            right[0 if m["correct"] else 1] += 1
        else:
            wrong[0 if m["correct"] else 1 if m["answer"] == s["answer"] else 2] += 1
    return wrong, right


def pct(x, n):
    return f"{100 * x / n:.0f}%" if n else "-"


def main(argv=None):
    cfg = parse_config(DigitsConfig, __doc__, argv)
    try:
        with open(cfg.results) as f:
            res = json.load(f)
        N, models = res["trained_max_digits"], res["models"]
    except (OSError, ValueError, KeyError) as e:
        raise BadInput(f"cannot read {cfg.results} as evaluate.py's results.json ({e})") from None
    if (res.get("task"), res.get("fmt")) != ("add", "reverse"):
        raise BadInput(
            f"{cfg.results} is {res.get('task')} ({res.get('fmt')}); this study reads addition in "
            "reverse"
        )
    names = cfg.models.split(",") if cfg.models else list(models)
    if bad := [m for m in names if m not in models]:
        raise BadInput(
            f"--models: no model {bad[0]!r} in {cfg.results} (it has {', '.join(models)})"
        )
    rows = []
    for name in names:
        s = study(models[name]["records"], N)
        d = s["digits"]
        rows.append(
            [name, s["wrong"], s["wrong length"], d, pct(s["inside"], d)]
            + [f"{pct(s['hits'][k], d)} ({pct(s['chance'][k], d)})" for k in SLIPS]
        )
    print(
        f"Wrong answer digits past {N} digits, in answers of the right length whose carry row is "
        "right "
        f"({cfg.results}); in brackets: a random wrong digit\n"
    )
    print(
        markdown_table(
            [
                "model",
                "wrong past N",
                "answer row of another length",
                "wrong digits",
                "in columns 1..N",
            ]
            + list(SLIPS),
            rows,
        )
    )
    rows = []
    for name in [m for m in names if m.startswith("learner_on_smart") and "smart" in models]:
        wrong, right = handed(models["smart"]["records"], models[name]["records"], N)
        rows.append(
            [name, sum(wrong)]
            + [pct(w, sum(wrong)) for w in wrong]
            + [sum(right), pct(right[1], sum(right))]
        )
    if rows:
        print(f"\nHanded smart's output past {N} digits:\n")
        print(
            markdown_table(
                [
                    "model",
                    "smart wrong",
                    "fixed",
                    "the same wrong answer",
                    "another wrong answer",
                    "smart right",
                    "broken",
                ],
                rows,
            )
        )


if __name__ == "__main__":
    run_main(main)
