"""The API examples in examples/ run with the shipped model and give intact molecules."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from openmm_jamun.sample import FELL_APART_WARNING

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["walk_jump_api.py", "restrained_walk.py"])
def test_api_example_runs_and_its_molecules_stay_whole(script, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--steps", "300"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # A walk that falls apart (the shipped model on a peptide length it never saw: 92% here) shows in
    # this figure; the shipped model on AA breaks a bond by more than 1 Å in 0.03-0.1% of its samples.
    fell_apart = re.search(r"a bond off by more than 1 Å in (\d+)%", result.stdout)
    assert fell_apart, result.stdout
    assert int(fell_apart.group(1)) <= 100 * FELL_APART_WARNING, result.stdout
    assert any((tmp_path / "example-out").glob("*.dcd"))
