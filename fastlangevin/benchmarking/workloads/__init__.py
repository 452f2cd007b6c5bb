"""Built-in workloads; importing this package registers them in ``registry.WORKLOADS``."""

from . import corrector, step  # noqa: F401
