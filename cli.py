"""
The command line of every stage: a config dataclass whose fields are the options, each with its
--help and its checks, all checked before any work; and bad input as one line `error: ...` with
exit code 2 (no traceback, nothing written).
"""

import argparse
import math
import operator
import os
import sys
import tempfile
from dataclasses import field, fields

from llama import LlamaError


class BadInput(Exception):
    """Anything the user can fix: an option, a file, a checkpoint. run_main makes it one line."""


def run_main(main, argv=None):
    """main(argv); bad input is one line and exit code 2, Ctrl-C one line and exit code 130."""
    try:
        main(argv)
    except (BadInput, LlamaError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted: checkpoints already saved are whole", file=sys.stderr)
        sys.exit(130)


def opt(default, help, choices=None, lo=None, hi=None, gt=None, lt=None, many=False):
    """A config field: its --help and its checks (lo <= x <= hi, gt < x < lt); many: repeatable."""
    checks = dict(help=help, choices=choices, lo=lo, hi=hi, gt=gt, lt=lt, many=many)
    return field(default=default, metadata=checks)


def strict_bool(s):
    """true/false, 1/0, yes/no, on/off; anything else is an error, never a silent False."""
    if s.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return s.lower() in ("1", "true", "yes", "on")
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def finite_float(s):
    """A number; nan and inf are errors (a nan learning rate would train to nothing)."""
    x = float(s)
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return x


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print its usage too: one line instead
        raise BadInput(message)


def add_option(parser, f):
    """--name=value for the config field f."""
    m = f.metadata
    name = f"--{f.name}"
    text = f"{m['help']} [default: {'auto' if f.default is None else f.default}]"
    if f.type is bool:  # --flag alone means true
        parser.add_argument(
            name, type=strict_bool, nargs="?", const=True, default=f.default, help=text
        )
    elif m["many"]:
        parser.add_argument(name, action="append", default=f.default, help=text)
    else:
        kind = {int: int, float: finite_float}.get(f.type, str)
        parser.add_argument(name, type=kind, default=f.default, help=text, choices=m["choices"])


# opt(lo=1): the value must be >= 1
BOUNDS = {
    "lo": (">=", operator.ge),
    "hi": ("<=", operator.le),
    "gt": (">", operator.gt),
    "lt": ("<", operator.lt),
}


def check_bounds(cfg):
    """Each number within its bounds; a path or a name given empty is a mistake."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, str) and not value and f.default:
            raise BadInput(f"--{f.name} is empty")
        if value is None or isinstance(value, (list, bool, str)):
            continue
        for bound, (sign, holds) in BOUNDS.items():
            limit = f.metadata[bound]
            if limit is not None and not holds(value, limit):
                raise BadInput(f"--{f.name}={value}: must be {sign} {limit}")


def parse_config(cls, doc, argv=None):
    """--name=value for every field of the dataclass cls, all checked before any work; then the
    config's own check(), if it has one."""
    parser = Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        add_option(parser, f)
    cfg = cls(**vars(parser.parse_args(argv)))
    check_bounds(cfg)
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


def check_fits(count, what):
    """Refuse a count of problems or samples whose records (about 4 KB each, with their texts)
    would take more than half of this machine's memory: better one line now than a hang later."""
    if count * 4096 > os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2:
        raise BadInput(f"{what}: {count:,} records are more than this machine's memory holds")


def check_writable(*paths):
    """Fail before the work, not after it: each path a file we can write in a folder we can make."""
    for path in map(os.path.abspath, paths):
        if os.path.isdir(path) or (os.path.exists(path) and not os.access(path, os.W_OK)):
            what = "a folder" if os.path.isdir(path) else "read-only"
            raise BadInput(f"cannot write {path}: it is {what}")
        parent = os.path.dirname(path)
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not can_make_in(parent):
            raise BadInput(f"cannot write {path}: {parent} is not a writable folder")


def can_make_in(folder):
    """Whether a folder can be made in `folder`: tried (and removed), since access() says yes to
    root even where nothing can be made (/proc)."""
    try:
        tempfile.TemporaryDirectory(dir=folder).cleanup()
    except OSError:
        return False
    return True
