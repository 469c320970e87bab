import os

import pytest
import torch
from openmm import unit

import openmm_jamun as oj

torch.set_num_threads(1)

BACKENDS = ["torch", "python"]
# JAMUN_TEST_PLATFORMS=CUDA runs the exactness tests on a GPU (benchmarks/gpu_check.sh does).
PLATFORMS = os.environ.get("JAMUN_TEST_PLATFORMS", "Reference,CPU").split(",")


def make_walk(denoiser, topology, x0, backend="torch", platform="CPU", seed=0, integrator=None, **force_kwargs):
    """A Simulation of the walk for ``denoiser`` started from x0 + σε, and its NoisedSystem."""
    properties = {"Precision": "mixed"} if platform == "CUDA" else None
    simulation = oj.create_walk_simulation(topology, x0, denoiser, backend=backend, platform=platform, seed=seed,
                                           integrator=integrator, properties=properties, **force_kwargs)
    return simulation, simulation.noised


@pytest.fixture(scope="session")
def gaussian30():
    return oj.gaussian_example(30, s=0.05 * unit.nanometer, sigma=0.04 * unit.nanometer, seed=0)


@pytest.fixture(scope="session")
def gaussian10():
    return oj.gaussian_example(10, s=0.05 * unit.nanometer, sigma=0.04 * unit.nanometer, seed=1)


@pytest.fixture(scope="session")
def md_root(tmp_path_factory):
    from openmm_jamun.data.md import run_md

    """Two tiny reference-MD runs: a capped dipeptide and an uncapped tripeptide (20 ps each)."""
    root = tmp_path_factory.mktemp("md")
    for seq, caps in (("A", True), ("GAS", False)):
        run_md(seq, str(root / (seq if caps else f"u{seq}")), ns=0.02, caps=caps, seed=1, threads=1,
               equilibration=1 * unit.picosecond, progress=False, chunk_frames=10)
    return root


def positions_nm(simulation):
    return simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def random_network(kind: str = "direct", seed: int = 0, config=None, sigma: float = 0.04):
    """A small e3nn denoiser (direct or energy) with random weights and a unit output gain: a generic,
    not freshly-initialised, network."""
    from openmm_jamun.model.network import NetworkConfig, build_denoiser

    torch.manual_seed(seed)
    config = config or NetworkConfig(hidden_scalars=16, hidden_vectors=4, num_layers=2)
    denoiser = build_denoiser(kind, config, sigma, 0.2)
    with torch.no_grad():
        denoiser.net.output_gain.fill_(1.0)
    return denoiser.eval()
