"""Helpers around the embedded ``local`` Terraform cloud (``include/terraform/local``) for tests, demo and bench."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TENTACLE_CTL = Path(__file__).resolve().parents[1] / "include" / "terraform" / "local" / "scripts" / "tentacle-ctl.sh"


def stop_tentacles(runtime_dir: str | Path) -> int:
    """Stop every simulated VM under ``runtime_dir`` whatever state Terraform is in; return how many homes."""
    runtime_dir = Path(runtime_dir)
    if not runtime_dir.is_dir():
        return 0
    homes = [home for home in runtime_dir.iterdir() if home.is_dir()]
    for home in homes:
        subprocess.run(  # noqa: S603
            ["bash", str(TENTACLE_CTL), "stop"],
            env={**os.environ, "TENTACLE_NAME": home.name, "TENTACLE_HOME": str(home)},
            capture_output=True,
            check=False,
            timeout=60,
        )
    return len(homes)
