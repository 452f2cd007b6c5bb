"""``fastlangevin demo [NAME]``: the README's main job.

Every demo takes ``--device``, ``--seed``, ``--out DIR`` (its PNGs), ``--quick`` (a CI-sized
run), ``--no-plots`` and ``--no-progress``; it prints a short summary at the end. Demo
modules import lazily (matplotlib / scikit-learn only when a demo needs them).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

import torch

#: name → (module, config class, one-line description, default CPU threads)
#: The 2-D demos default to one intra-op thread: their ops touch ≤ ~60k elements, too little
#: to split, and on a busy machine splitting is ruinous (mog, full size, on a shared 2-core
#: box: 70 s with torch's 2 threads, 5 s with 1, same numbers). digits (convolutions) keeps
#: torch's default. ``--threads`` overrides both.
DEMOS = {
    "mog": (
        "fastlangevin.demos.mog",
        "MogConfig",
        "Langevin on a 2-D Gaussian mixture with its exact score: the noise, and annealing",
        1,
    ),
    "toy": (
        "fastlangevin.demos.toy",
        "ToyConfig",
        "train a score network with dsm_loss on 2-D data; annealed Langevin and PC sampling",
        1,
    ),
    "digits": (
        "fastlangevin.demos.digits",
        "DigitsConfig",
        "a small conv noise-conditional score network on scikit-learn's 8x8 digits",
        None,
    ),
    "ebm": (
        "fastlangevin.demos.ebm",
        "EbmConfig",
        "an energy network trained with short-run Langevin from a replay buffer",
        1,
    ),
    "bayes": (
        "fastlangevin.demos.bayes",
        "BayesConfig",
        "a Bayesian MLP sampled by pSGLD: 1-D regression with a gap",
        1,
    ),
}

#: options that override a field of the demo's config when given (and the demo has the field)
OVERRIDES = {"n": "n", "iters": "iters", "data": "data"}


def make_config(name: str, quick: bool = False, **overrides):
    """The config a demo runs with: full size or ``--quick``, then the given field overrides
    (None values ignored; fields the demo does not have are an error)."""
    module, cls_name = DEMOS[name][:2]
    cls = getattr(importlib.import_module(module), cls_name)
    cfg = cls.quick() if quick else cls()
    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"demo {name!r} has no option {', '.join('--' + u for u in unknown)}")
    return dataclasses.replace(cfg, **given)


def run_demo(
    name: str,
    *,
    device="cpu",
    seed: int = 0,
    out=None,
    quick: bool = False,
    progress: bool = False,
    threads=None,
    **overrides,
):
    """Run demo ``name`` and return its :class:`~fastlangevin.demos.common.DemoResult`.

    ``threads``: torch's CPU threads during the run (None → the demo's default; restored after).
    """
    from .common import DemoContext

    if name not in DEMOS:
        raise ValueError(f"unknown demo {name!r}; choose one of {', '.join(DEMOS)}")
    cfg = make_config(name, quick, **overrides)
    ctx = DemoContext(device=device, seed=seed, out=out, progress=progress)
    threads = DEMOS[name][3] if threads is None else threads
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return importlib.import_module(DEMOS[name][0]).run(ctx, cfg)
    finally:
        torch.set_num_threads(before)


def _positive_int(text: str) -> int:
    """argparse type for --threads: a clear usage error instead of torch's traceback for 0 or less."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _device_problem(device: str):
    """Why ``device`` cannot run here (None when it can): checked before anything is printed."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        return str(exc)
    if dev.type == "cuda" and not torch.cuda.is_available():
        return "--device cuda, but torch sees no CUDA device here (try --device cpu)"
    return None


def _run(args) -> int:
    problem = _device_problem(args.device)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    overrides = {field: getattr(args, opt) for opt, field in OVERRIDES.items()}
    out = None if args.no_plots else args.out
    size = "quick" if args.quick else "full"
    threads = args.threads if args.threads is not None else (DEMOS[args.name][3] or torch.get_num_threads())
    print(
        f"fastlangevin demo {args.name} ({size}) on {args.device}, seed {args.seed}, {threads} CPU thread(s): "
        f"{DEMOS[args.name][2]}",
        flush=True,
    )
    try:
        res = run_demo(
            args.name,
            device=args.device,
            seed=args.seed,
            out=out,
            quick=args.quick,
            progress=not args.no_progress,
            threads=threads,
            **overrides,
        )
    except ValueError as exc:
        print(f"error: {exc}")
        return 2
    print(res.summary())
    return 0


def add_parser(sub) -> None:
    lines = "\n".join(f"  {name:7s} {entry[2]}" for name, entry in DEMOS.items())
    p = sub.add_parser(
        "demo",
        help="run a demo (default: mog)",
        description=f"Demos (default mog):\n{lines}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", default="mog", choices=list(DEMOS), help="which demo (default: mog)")
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda if present, else cpu)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw in the run (default 0)")
    p.add_argument("--out", default="out", help="folder for the PNGs (default ./out)")
    p.add_argument("--quick", action="store_true", help="a small run (seconds; what CI runs)")
    p.add_argument("--no-plots", action="store_true", help="write no pictures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads (default: 1 for the 2-D demos, torch's default for digits)",
    )
    p.add_argument("--n", type=int, default=None, help="number of samples / chains drawn")
    p.add_argument("--iters", type=int, default=None, help="training iterations (toy, digits, ebm)")
    p.add_argument("--data", default=None, choices=["swissroll", "rings"], help="2-D data set (toy, ebm)")
    p.set_defaults(func=_run)
