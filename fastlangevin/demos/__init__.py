"""Demos behind ``fastlangevin demo [NAME]`` (the README's main job).

* :mod:`.mog` — Langevin on a 2-D Gaussian mixture with its exact score (:mod:`.mixture`);
* :mod:`.toy` — a score network trained with ``dsm_loss`` on 2-D data, annealed Langevin and PC;
* :mod:`.digits` — a conv noise-conditional score network on scikit-learn's 8×8 digits;
* :mod:`.ebm` — an energy network trained by persistent contrastive divergence (:mod:`.replay`;
  radial-band metric: :mod:`.radial`).

Shared pieces: :mod:`.common` (run context, results, progress bar, figures), :mod:`.datasets`,
:mod:`.nets`, :mod:`.training`, :mod:`.metrics`; the command line in :mod:`.cli`
(:func:`.cli.run_demo` runs one from Python).
"""
