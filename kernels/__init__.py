"""Triton kernels of fastlangevin (installed as ``fastlangevin.kernels``).

Importing a submodule imports Triton; fastlangevin only does so when the Triton backend is
selected, so the package works where Triton is absent.
"""
