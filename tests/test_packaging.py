"""A non-editable install: the wheel carries the default model and py.typed, and the installed package
finds its model from any directory."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_the_default_model_and_finds_it_when_installed(tmp_path):
    # built from a copy of the sources: an in-tree build/ left by an earlier build would hide a missing file
    source = tmp_path / "source"
    shutil.copytree(ROOT / "openmm_jamun", source / "openmm_jamun", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("openmm_jamun-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    models = [f"openmm_jamun/models/{name}{suffix}" for name in ("capped_2aa", "capped_2aa_energy")
              for suffix in (".pt", ".json", ".md")]
    for name in ["openmm_jamun/py.typed"] + models:
        assert name in names, name
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("JAMUN_MODELS", None)
    found = subprocess.run([sys.executable, "-c", "import openmm_jamun.model.registry as r; "
                            "print(r.resolve_model('default'))"], capture_output=True, text=True, cwd=elsewhere,
                           env=env, timeout=300)
    assert found.returncode == 0, found.stderr[-3000:]
    assert Path(found.stdout.strip()) == site / "openmm_jamun" / "models" / "capped_2aa.pt"
