"""``fastlangevin info``: versions, devices, and which backend each device gets."""

from __future__ import annotations

import os
import platform


def collect_info() -> dict:
    import numpy
    import torch

    import fastlangevin
    from fastlangevin import _backend

    info = {
        "fastlangevin": fastlangevin.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "triton": None,
        "triton_import_error": _backend.triton_import_error(),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET", "0"),
        "FASTLANGEVIN_BACKEND": os.environ.get(_backend.ENV_VAR),
        "interpreter_usable": False,
        "devices": [],
    }
    if _backend.triton_available():
        import triton

        info["triton"] = triton.__version__
        info["interpreter_usable"] = _backend.kernels_interpreted()
    devices = [torch.device("cpu")] + [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    for dev in devices:
        name = platform.processor() or "cpu" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
        entry = {"device": str(dev), "name": name}
        try:
            entry["backend"] = _backend.resolve_backend(dev, None)
        except Exception as exc:  # an invalid FASTLANGEVIN_BACKEND, say
            entry["backend"] = f"error: {exc}"
        try:
            _backend.resolve_backend(dev, "triton")
            entry["triton_runs"] = "yes (interpreter)" if dev.type == "cpu" else "yes (compiled)"
        except Exception as exc:
            entry["triton_runs"] = f"no: {exc}"
        info["devices"].append(entry)
    return info


def _run(args) -> int:
    info = collect_info()
    if args.json:
        import json

        print(json.dumps(info, indent=2))
        return 0
    for key, val in info.items():
        if key != "devices":
            print(f"{key:22s} {val}")
    print("devices:")
    for d in info["devices"]:
        print(f"  {d['device']:8s} {d['name']}")
        print(f"    default backend: {d['backend']}")
        print(f"    triton backend:  {d['triton_runs']}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="versions, devices and the backend each device gets")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_run)
