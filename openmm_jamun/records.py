"""Run directories and their records: the JSON beside every run (``run.json``, ``md.json``).

A run that is resumed keeps the settings it started with; asking for another value is an error that
names the setting, never a run that silently changes physics halfway. ``write_json`` replaces a file
atomically, so a record is whole or absent even when a run is interrupted while writing it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Callable, Mapping

#: The files of a ``jamun sample`` run directory.
SAMPLES = "samples.dcd"
WALK = "walk.dcd"
TOPOLOGY = "topology.pdb"
LOG = "log.csv"
CHECKPOINT = "walk.chk"
RUN = "run.json"
RELAXED = "relaxed.dcd"
RELAXED_TOPOLOGY = "relaxed_topology.pdb"
BIAS = "bias.npz"
WEIGHTS = "weights.csv"


class RunFiles:
    """Paths of the files in a ``jamun sample`` run directory."""

    def __init__(self, directory):
        self.directory = Path(directory)
        (self.samples, self.walk, self.topology, self.log, self.checkpoint, self.record, self.relaxed,
         self.relaxed_topology, self.bias, self.weights) = (
            str(self.directory / name) for name in
            (SAMPLES, WALK, TOPOLOGY, LOG, CHECKPOINT, RUN, RELAXED, RELAXED_TOPOLOGY, BIAS, WEIGHTS))


class SettingsMismatchError(ValueError):
    """A resumed run was asked for settings other than those it started with."""


def write_json(path, data, **dump_kwargs) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then ``os.replace``)."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, **dump_kwargs)
    os.replace(tmp, path)


def read_json(path) -> dict:
    with open(os.fspath(path)) as handle:
        return json.load(handle)


def same_value(given, kept) -> bool:
    """Equality for settings: numbers to 1e-9 relative (a float written to JSON and read back), else ==."""
    numbers = (int, float)
    if isinstance(given, numbers) and isinstance(kept, numbers) and not isinstance(given, bool):
        return math.isclose(float(given), float(kept), rel_tol=1e-9, abs_tol=1e-12)
    return given == kept


def changed_settings(kept: Mapping, given: Mapping,
                     equal: Mapping[str, Callable[[object, object], bool]] | None = None,
                     none_means_unset: bool = True) -> dict:
    """{name: (kept, given)} for each setting in ``given`` that is in ``kept`` and differs (compared
    with ``equal[name]`` where given, else :func:`same_value`). With ``none_means_unset`` a None in
    ``given`` is a setting not asked for, never a difference."""
    equal = equal or {}
    changed = {}
    for name, value in given.items():
        if (value is None and none_means_unset) or name not in kept:
            continue
        if not equal.get(name, same_value)(value, kept[name]):
            changed[name] = (kept[name], value)
    return changed


def check_same_settings(where: str, kept: Mapping, given: Mapping,
                        equal: Mapping[str, Callable[[object, object], bool]] | None = None,
                        hint: str = "a resumed run keeps its settings") -> None:
    """:class:`SettingsMismatchError` naming every setting of ``given`` that differs from ``kept``."""
    changed = changed_settings(kept, given, equal)
    if changed:
        listed = "; ".join(f"{name} {new!r} (the run has {old!r})" for name, (old, new) in changed.items())
        raise SettingsMismatchError(f"cannot resume {where} with {listed}: {hint}")
