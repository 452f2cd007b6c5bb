"""The built-in workloads: one module per family, each a :class:`~fastlangevin.benchmarking.engine.Workload`
subclass (registered, in order, by the package's ``__init__``)."""
