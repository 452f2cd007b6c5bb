"""Built-in workloads; importing this package registers them in ``registry.WORKLOADS``."""

from . import annealed, corrector, step  # noqa: F401
