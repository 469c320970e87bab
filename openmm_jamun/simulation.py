"""One call for a ready walk: structure and model in, an OpenMM ``Simulation`` out.

``create_walk_simulation`` does what every walk needs, in the order it needs it: the input checked
(a sequence is built as a capped peptide), the model resolved and exported for the peptide with K
chains, the noised System, the force, the integrator, the platform, positions and velocities. What
it returns is an ordinary ``app.Simulation``: add reporters and call ``step``.
"""

from __future__ import annotations

import warnings

from openmm import app, unit

from .force import default_backend, make_jamun_force
from .inputs import read_input
from .integrator import JamunIntegrator
from .model.contract import load_denoiser
from .model.registry import denoiser_for, resolve_model
from .platforms import get_platform
from .system import NoisedSystem, create_noised_system


class WalkSimulation(app.Simulation):
    """An ``app.Simulation`` of a JAMUN walk.

    Beyond the Simulation it keeps ``noised`` (the :class:`~openmm_jamun.system.NoisedSystem`: the
    walk's topology, the clean start x⁽⁰⁾, σ, the chain count), ``denoiser`` (the TorchScript module
    the force runs and a :class:`~openmm_jamun.reporter.JumpReporter` jumps with) and ``name``
    (the peptide, for file names and progress bars).
    """

    noised: NoisedSystem
    denoiser: object
    name: str


def create_walk_simulation(structure, positions=None, model="default", *, chains: int = 1,
                           temperature=300 * unit.kelvin, platform: str = "CPU", threads: int | None = 1,
                           properties: dict | None = None, backend: str = "auto", seed: int | None = 0, integrator=None,
                           **force_kwargs) -> WalkSimulation:
    """A ready walk of ``structure``: JamunForce, JamunIntegrator, positions y⁽⁰⁾ = x⁽⁰⁾ + σε and
    velocities set.

    Parameters
    ----------
    structure : str or openmm.app.Topology
        A one-letter sequence (built as ACE-...-NME), a PDB/PDBx file of one peptide, or a Topology
        (then pass ``positions``). Sequences and files are checked as ``jamun sample`` checks them.
        Hydrogens are dropped: the walk runs on the heavy atoms.
    model : str, path or torch.jit.ScriptModule
        ``"default"``, a name of a shipped model, a training checkpoint (exported here for the peptide
        and ``chains``) or a TorchScript denoiser (which must be for this peptide and ``chains``).
    chains : int
        Independent walks of the peptide in the one System.
    temperature : temperature
        Of the force and the integrator (they must agree; the walk's statistics do not depend on it).
    platform, threads, properties :
        OpenMM platform by name (any case), the CPU platform's threads, and further platform
        properties (e.g. ``{"Precision": "mixed"}`` on CUDA).
    backend : "auto", "torch" or "python"
        TorchForce (openmm-torch) or PythonForce.
    seed : int or None
        Seeds the initial noise, the velocities and the integrator's random numbers (None: random).
    integrator : openmm.Integrator, optional
        Another integrator instead of ``JamunIntegrator(temperature, sigma)``.
    force_kwargs :
        Passed to the force (``score_clip``, and ``device`` for the python backend).
    """
    if isinstance(structure, app.Topology):
        if positions is None:
            raise ValueError("positions are required when a Topology is given")
        topology, name = structure, "peptide"
    else:
        if positions is not None:
            raise ValueError("positions go with a Topology; a sequence or a file brings its own")
        topology, positions, name = read_input(str(structure))
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        denoiser = denoiser_for(resolve_model(str(model)), topology, chains)
    else:
        denoiser = model
    denoiser, _ = load_denoiser(denoiser)
    with warnings.catch_warnings():  # the walk runs on heavy atoms by design: dropping hydrogens is no news here
        warnings.filterwarnings("ignore", message="dropping .* hydrogen")
        noised = create_noised_system(topology, positions, denoiser, temperature=temperature, chains=chains,
                                      seed=seed)
    plat, platform_properties = get_platform(platform, threads)
    platform_properties.update(properties or {})
    backend = default_backend() if backend == "auto" else backend
    if backend == "python" and plat.getName() == "CUDA":
        force_kwargs.setdefault("device", "cuda")
    noised.system.addForce(make_jamun_force(denoiser, backend=backend, temperature=temperature, **force_kwargs))
    if integrator is None:
        integrator = JamunIntegrator(temperature=temperature, sigma=noised.sigma)
        if seed is not None:
            integrator.setRandomNumberSeed(int(seed) + 1)  # 0 would mean "pick one"
    simulation = WalkSimulation(noised.topology, noised.system, integrator, plat, platform_properties)
    simulation.context.setPositions(noised.positions)
    simulation.context.setVelocities(noised.velocities)
    simulation.noised, simulation.denoiser, simulation.name = noised, denoiser, name
    return simulation
