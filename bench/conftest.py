"""pytest-benchmark set-up for ``bench/`` (not part of the test suite: run ``pytest bench``).

Without a GPU the Triton provider is skipped (it would need the interpreter, which is not a
benchmark). Select what runs with ``FASTLANGEVIN_BENCH_{DEVICE,WORKLOADS,DTYPES,MODES,SIZES,PROVIDERS}``.
"""

import torch

# Keep CPU numbers comparable between runs on shared machines.
if not torch.cuda.is_available():
    torch.set_num_threads(min(2, torch.get_num_threads()))
