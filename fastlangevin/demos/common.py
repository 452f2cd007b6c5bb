"""What every demo shares: its run context (device, seeded generator, output folder, progress
bar), the result it hands back (numbers + summary lines + files), and figure saving.

Reproducibility: a demo draws *all* its randomness from ``ctx.generator`` (data, batches,
noise levels, sampler noise) and builds its networks right after ``torch.manual_seed(seed)``,
so a seed fixes the whole run on a given device and backend.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch


@dataclass
class DemoContext:
    """Where and how a demo runs.

    ``out``: folder for the PNGs (created on first save); None → no pictures (tests, timing).
    ``progress``: draw progress bars on stderr (the samplers' own bars included).
    """

    device: torch.device
    seed: int = 0
    out: Optional[Path] = None
    progress: bool = True
    generator: torch.Generator = field(init=False)

    def __post_init__(self):
        self.device = torch.device(self.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        self.out = None if self.out is None else Path(self.out)
        self.reseed()

    def reseed(self) -> None:
        """Reset every random source the demo uses to the seed (call once at the start)."""
        torch.manual_seed(self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def bar(self, total: int, desc: str) -> "ProgressBar":
        return ProgressBar(total, desc, enabled=self.progress)


@dataclass
class DemoResult:
    """What a demo hands back: ``metrics`` (the numbers tests check), ``lines`` (the summary
    printed at the end), ``files`` (PNGs written) and the wall time."""

    name: str
    metrics: Dict[str, float] = field(default_factory=dict)
    lines: List[str] = field(default_factory=list)
    files: List[Path] = field(default_factory=list)
    seconds: float = 0.0

    def say(self, line: str) -> None:
        self.lines.append(line)

    def summary(self) -> str:
        head = f"== fastlangevin demo {self.name}: summary ({self.seconds:.1f} s) =="
        body = [f"  {line}" for line in self.lines]
        files = [f"  picture: {p}" for p in self.files]
        return "\n".join([head, *body, *files])


class ProgressBar:
    """A small stderr progress bar with a rate and an ETA, and a free-text ``note`` (the loss)."""

    WIDTH = 24

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled = max(int(total), 1), desc, enabled
        self.n, self.note, self._t0, self._last = 0, "", time.perf_counter(), 0.0

    def update(self, k: int = 1, note: Optional[str] = None) -> None:
        self.n += k
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.1 and self.n < self.total:  # redraw at most 10×/s
            return
        self._last = now
        frac = min(self.n / self.total, 1.0)
        done = int(frac * self.WIDTH)
        rate = self.n / max(now - self._t0, 1e-9)
        eta = (self.total - self.n) / rate if rate > 0 else 0.0
        sys.stderr.write(
            f"\r{self.desc}: [{'#' * done}{'.' * (self.WIDTH - done)}] {self.n}/{self.total} {rate:,.0f}/s eta "
            f"{eta:4.0f}s {self.note}   "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def timed(ctx: DemoContext):
    """``with timed(ctx) as t: ...`` → ``t.seconds`` (device work included: syncs on CUDA)."""

    class _T:
        seconds = 0.0

        def __enter__(self):
            ctx.sync()
            self._t0 = time.perf_counter()
            return self

        def __exit__(self, *exc):
            ctx.sync()
            self.seconds = time.perf_counter() - self._t0

    return _T()


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend (demos never open windows)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "the demos' pictures need matplotlib: pip install 'fastlangevin[plot]' (or run with --no-plots)"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(ctx: DemoContext, result: DemoResult, fig, name: str) -> None:
    """Write ``fig`` as ``ctx.out / name`` and record the file in the result."""
    plt = pyplot()
    ctx.out.mkdir(parents=True, exist_ok=True)
    path = ctx.out / name
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    result.files.append(path)


def ran_summary(ran) -> str:
    """``[(op, backend), ...]`` from ``fl.track_backends()`` → "langevin_step on torch ×1000"."""
    counts: Dict[tuple, int] = {}
    for key in ran:
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return "no fastlangevin op ran"
    return ", ".join(f"{op} on {backend} ×{n}" for (op, backend), n in sorted(counts.items()))
