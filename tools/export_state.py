"""Write the shippable fp16 checkpoint from a training state (e.g. one brought back from a GPU run).

    python tools/export_state.py /work/.device/.../state codec/weights/ditic-small.safetensors

The state's EMA weights become the checkpoint; a ``lean`` or ``ema`` state gives the very file
(same model id) that the run's own ``--export`` wrote on the GPU machine.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs.train import export_state  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("state", help="a state folder (state.json + state-*.safetensors)")
    p.add_argument("out", help="the checkpoint to write (.safetensors)")
    args = p.parse_args()
    model_id = export_state(args.state, args.out)
    print(f"{args.out}: model id {model_id}, {os.path.getsize(args.out) / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
