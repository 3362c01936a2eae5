"""Importing spectravlm makes OpenMP threads sleep while they wait (benchmarks/RESULTS.md, ## threads).

GNU OpenMP (torch's on Linux) reports what it read from the environment with ``OMP_DISPLAY_ENV=VERBOSE``;
``GOMP_SPINCOUNT = '0'`` means waiting threads sleep at once, ``'300000'`` is its spinning default.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def _spincount(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run(
        [sys.executable, "-c", code + "; torch.ones(4).sum()"],
        env=base | {"OMP_DISPLAY_ENV": "VERBOSE"} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", out.stdout + out.stderr)
    if found is None:
        pytest.skip("torch's OpenMP runtime is not GNU OpenMP (no OMP_DISPLAY_ENV report)")
    return found.group(1)


def test_importing_spectravlm_first_makes_waiting_threads_sleep():
    assert _spincount("import torch") != "0"  # the runtime's own default spins
    assert _spincount("import spectravlm, torch") == "0"


def test_a_policy_the_user_set_is_kept():
    assert _spincount("import spectravlm, torch", OMP_WAIT_POLICY="ACTIVE") != "0"
