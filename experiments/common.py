"""What the experiment scripts share: running a stage script, writing results, a pyplot if there is one."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, args, threads=None):
    """Run a stage script as a user would (--key=value args); a failure stops with its last line."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}))
    r = subprocess.run([sys.executable, name] + [f"--{k}={v}" for k, v in args.items()], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{name} {args}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return r.stdout


def pyplot():
    """matplotlib.pyplot without a screen, or None where matplotlib is not installed (it is optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def write_results(out_dir, text, data, fig=None):
    """results.md (the table), results.json (everything) and results.png (the plot, if one was made)."""
    print("\n" + text)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    written = ["results.md", "results.json"]
    if fig is not None:
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "results.png"), dpi=100)
        written.append("results.png")
    print(f"wrote {', '.join(os.path.join(out_dir, w) for w in written)}")
