"""Built-in workloads; importing this package registers them in ``registry.WORKLOADS``."""

from . import annealed, corrector, dsm, step  # noqa: F401
