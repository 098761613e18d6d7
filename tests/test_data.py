import random

import pytest

from cot_data import (
    TASKS,
    CharTokenizer,
    ProblemStream,
    check,
    check_chain,
    check_format,
    dynamic_noise,
    eval_exclusions,
    eval_operands,
    eval_set,
    formats_of,
    make_problem,
    parse_answer,
    random_operands,
    static_noise,
    truth,
)

TASK_FORMATS = [(task, fmt) for task in TASKS for fmt in formats_of(task)]


def python_truth(task, ops):
    return {"add": lambda: ops[0] + ops[1], "mul": lambda: ops[0] * ops[1]}[task]()


@pytest.mark.parametrize("task,fmt", TASK_FORMATS)
def test_generated_cot_is_accepted_and_agrees_with_python(task, fmt):
    rng = random.Random(0)
    for n in list(range(1, 13)) + [20] + ([30] if fmt != "hints" else []):
        for _ in range(15):
            ops = random_operands(task, n, rng)
            p = make_problem(task, ops, fmt, n)
            answer, ok = check(task, fmt, ops, p.completion)
            assert ok, (p.prompt + p.completion, answer)
            assert int(answer) == python_truth(task, ops)
            assert p.completion.endswith("$") and p.completion.count("#") == 1
            assert len(str(max(ops))) <= n
            assert check_chain(task, fmt, ops, p.completion)


def test_unknown_tasks_and_formats_are_refused():
    assert len(TASK_FORMATS) == 2 * 6  # add and mul have columns: every format
    with pytest.raises(ValueError, match="no bogus format"):
        check_format("add", "bogus")
    with pytest.raises(ValueError, match="unknown task 'gcd'"):
        make_problem("gcd", [12, 18])


@pytest.mark.parametrize("task,fmt", TASK_FORMATS)
def test_chain_checker_rejects_every_broken_step(task, fmt):
    """Every digit of the chain of thought changed, one at a time, is caught - even where the answer
    stays right, which the answer checker alone would pass."""
    rng = random.Random(11)
    caught_with_right_answer = 0
    for n in (1, 2, 4, 6):
        ops = random_operands(task, n, rng)
        c = make_problem(task, ops, fmt, n).completion
        cot = c.rsplit("#", 1)[0]
        for i, ch in enumerate(cot):
            if ch.isdigit():
                broken = c[:i] + str((int(ch) + rng.randrange(1, 10)) % 10) + c[i + 1 :]
                assert not check_chain(task, fmt, ops, broken)
                caught_with_right_answer += check(task, fmt, ops, broken)[1]
        assert not check_chain(task, fmt, ops, c[:-1]) and not check_chain(task, fmt, ops, c + "1")
    assert caught_with_right_answer > 0 or fmt == "answer"


def test_chain_checker_agrees_with_the_carry_rule():
    """On reverse addition, an independent check - each carry and each answer digit from the
    operands by the column rule - agrees with check_chain on right, mutated and noisy chains."""
    rng = random.Random(12)
    for _ in range(300):
        n = rng.randint(1, 9)
        p = make_problem("add", random_operands("add", n, rng), "reverse", n)
        c = p.completion
        if rng.random() < 0.5:
            i = rng.randrange(len(c) - 1)
            c = c[:i] + str(rng.randrange(10)) + c[i + 1 :] if c[i].isdigit() else c
        else:
            c = dynamic_noise(p, rng, rate=0.5).completion
        rule, sums = _carry_row_errors(p.prompt, c)
        a = p.prompt[:-1].split("+")[0]
        by_rule = not rule and not sums and c[0] == "0" and len(c) == 2 * len(a) + 5
        assert check_chain("add", "reverse", p.operands, c) == by_rule, (p.prompt, c)


@pytest.mark.parametrize("task", TASKS)
def test_wrong_answers_are_rejected(task):
    rng = random.Random(1)
    for n in (1, 3, 7):
        ops = random_operands(task, n, rng)
        p = make_problem(task, ops, "plain", n)
        cot, ans = p.completion[:-1].rsplit("#", 1)
        first = ans.split(",")[0]
        bumped = str(int(first) + 1) + ans[len(first) :]
        assert not check(task, "plain", ops, cot + "#" + bumped + "$")[1]
        assert check(task, "plain", ops, "#" + ans)[1]  # the '$' is not required
        for junk in ("", "no answer", cot, "#", "#12a$", "#-3$"):
            assert not check(task, "plain", ops, junk)[1]


def test_checker_reads_only_the_final_answer():
    p = make_problem("add", [45, 67], "plain", 2)
    # a completion whose chain of thought is nonsense but whose final answer is right is right;
    # one that writes the right number earlier but a wrong final answer is wrong
    assert check("add", "plain", [45, 67], "garbage;#112$")[1]
    assert not check("add", "plain", [45, 67], "#112;#113$")[1]
    assert parse_answer("reverse", "0;#211$") == "112"
    assert p.answer == truth("add", [45, 67]) == "112"


def test_reverse_addition_layout():
    p = make_problem("add", [4821, 3961], "reverse")
    assert p.prompt == "1284+1693="
    assert p.completion == "00010;#28780$"  # carry into each column, then the sum, both LSD first


def test_static_noise_changes_cot_digits_at_the_rate_and_keeps_the_answer():
    rng = random.Random(2)
    changed = total = 0
    for _ in range(300):
        p = make_problem("add", random_operands("add", 8, rng), "plain", 8)
        q = static_noise(p, 0.3, rng)
        assert check(q.task, q.fmt, q.operands, q.completion)[1]
        a, b = p.completion.rsplit("#", 1)[0], q.completion.rsplit("#", 1)[0]
        assert len(a) == len(b) and q.completion.rsplit("#", 1)[1] == p.completion.rsplit("#", 1)[1]
        digits = [(x, y) for x, y in zip(a, b) if x.isdigit()]
        total += len(digits)
        changed += sum(x != y for x, y in digits)
    assert 0.27 < changed / total < 0.33
    assert static_noise(p, 0.0, rng).completion == p.completion


def _carry_row_errors(prompt, completion):
    """For reverse addition: (columns where the carry row breaks the carry rule,
    columns where the answer row disagrees with the operands and the carry row)."""
    a, b = prompt[:-1].split("+")
    carries, answer = completion[:-1].split(";#")
    rule = [
        i
        for i in range(len(a))
        if int(carries[i + 1]) != (int(a[i]) + int(b[i]) + int(carries[i])) // 10
    ]
    sums = [
        i for i in range(len(a)) if int(answer[i]) != (int(a[i]) + int(b[i]) + int(carries[i])) % 10
    ]
    return rule, sums + ([len(a)] if answer[len(a) :] != carries[len(a) :] else [])


def test_dynamic_noise_makes_one_error_and_carries_it_through():
    rng = random.Random(4)
    for _ in range(100):
        p = make_problem("add", random_operands("add", 6, rng), "reverse", 6)
        q = dynamic_noise(p, rng)
        assert not check(q.task, q.fmt, q.operands, q.completion)[1]  # the answer is wrong
        rule, sums = _carry_row_errors(q.prompt, q.completion)
        assert len(rule) == 1 and sums == []  # one wrong carry; every later digit follows from it
        assert dynamic_noise(p, rng, rate=0.0) is p
    for task in ("mul",):  # there too, a dynamic error reaches the final answer
        for _ in range(30):
            p = make_problem(task, random_operands(task, 5, rng), "plain", 5)
            assert not check(task, "plain", p.operands, dynamic_noise(p, rng).completion)[1]


def test_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer()
    rng = random.Random(5)
    for task in TASKS:
        p = make_problem(task, random_operands(task, 5, rng), "reverse")
        t = p.prompt + p.completion
        assert tok.decode(tok.encode(t)) == t
    assert [tok.encode(str(d))[0] - tok.digit_lo for d in range(10)] == list(range(10))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.encode("12+3é=")
    assert CharTokenizer(tok.config()["vocab"]).encode("7+8=") == tok.encode("7+8=")


def test_eval_sets_are_fixed_and_never_trained_on():
    a = eval_operands("add", 3, 50)
    assert a == eval_operands("add", 3, 50) and len({tuple(x) for x in a}) == 50
    assert eval_operands("add", 3, 50, seed=1) != a
    assert len(eval_operands("add", 1, 200)) == 20  # at most a fifth of the 100 one-digit sums
    excl = eval_exclusions("add", 2)
    stream = ProblemStream("add", "reverse", 1, 2, seed=0)
    seen = {tuple(stream.sample().operands) for _ in range(5000)}
    assert not seen & excl
    assert len(seen) > 1000
    assert [p.digits for p in eval_set("mul", 4, size=5)] == [4] * 5


def test_hints_name_each_digit_by_significance_and_stop_at_26_digits():
    p = make_problem("add", [34, 58], "hints", 2)
    assert p.prompt == "a4b3+a8b5=" and p.completion.endswith("#a2b9c0$")
    assert check("add", "hints", [34, 58], "#a2b9$") == ("92", True)
    with pytest.raises(ValueError, match="26 digits"):
        make_problem("add", [10**26, 10**26], "hints")


def test_compact_steps_have_a_fixed_size():
    p = make_problem("add", [987, 456], "compact", 3)
    steps = p.completion.split("#")[0].split(";")[:-1]
    assert steps == ["760>31", "851>41", "941>41"] and p.prompt == "789+654="


@pytest.mark.parametrize("task,fmt", TASK_FORMATS)
def test_mistake_kinds_on_every_task_and_format(task, fmt):
    from cot_data import mistake_kinds

    rng = random.Random(7)
    n = 3 if fmt != "hints" else 2
    p = make_problem(task, random_operands(task, n, rng), fmt)
    assert mistake_kinds(task, fmt, p.operands, p.completion) == set()
    cot, answer = p.completion[:-1].rsplit("#", 1)
    digits = [i for i, c in enumerate(answer) if c.isdigit()]
    # one answer digit off, the chain of thought untouched: a near miss of a right chain
    i = digits[0] if fmt == "plain" else digits[-1] if task != "sort" else digits[0]
    slip = answer[:i] + str((int(answer[i]) + 1) % 10) + answer[i + 1 :]
    kinds = mistake_kinds(task, fmt, p.operands, cot + "#" + slip + "$")
    if kinds:  # (a slip on a leading zero of a reversed answer leaves the number as it is)
        assert kinds == {"answer_wrong", "near_miss"} or kinds == {"answer_wrong", "wrong_length"}
    # an extra digit: the wrong length
    longer = answer + "7" if fmt in ("plain", "answer") or task == "sort" else "7" + answer
    assert "wrong_length" in mistake_kinds(task, fmt, p.operands, cot + "#" + longer + "$")
    # a step of the chain of thought broken, the right answer kept: not a mistake of the answer...
    if fmt != "answer":
        j = next(i for i, c in enumerate(cot) if c.isdigit())
        broken = cot[:j] + str((int(cot[j]) + 1) % 10) + cot[j + 1 :]
        assert mistake_kinds(task, fmt, p.operands, broken + "#" + answer + "$") == set()
        # ...and with a wrong answer it is a chain-of-thought mistake
        assert "cot_wrong" in mistake_kinds(task, fmt, p.operands, broken + "#" + longer + "$")
    assert mistake_kinds(task, fmt, p.operands, cot + "$") == {"answer_wrong", "no_answer"}
