"""OpenMM platforms and JamunForce backends by name."""

from __future__ import annotations

import openmm

#: How JamunForce reaches OpenMM: "torch" (openmm-torch's TorchForce), "python" (openmm.PythonForce), or
#: "auto" (torch where openmm-torch imports).
BACKENDS = ("auto", "torch", "python")


def platform_names() -> list[str]:
    return [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]


def get_platform(name: str | None = "CPU", threads: int | None = None) -> tuple[openmm.Platform, dict]:
    """(platform, properties) for the OpenMM platform called ``name`` (any case; None means CPU).

    ``threads`` sets the CPU platform's thread count (one thread makes a seeded run bit-reproducible:
    with several, OpenMM sums forces in an order that depends on the threads). An unknown or
    unavailable platform is an error that lists the available ones."""
    names = platform_names()
    match = {n.lower(): n for n in names}.get(str(name or "CPU").lower())
    if match is None:
        raise ValueError(f"OpenMM platform {name!r} is not available here; available: {', '.join(names)} "
                         "(CUDA needs the [cuda] extra and a GPU)")
    properties = {"Threads": str(int(threads))} if (threads and match == "CPU") else {}
    return openmm.Platform.getPlatformByName(match), properties
