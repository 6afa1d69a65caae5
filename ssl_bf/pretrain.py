"""Pretrain a backbone: `accelerate launch ssl_bf/pretrain.py recipe=mocov3_bf [key=value ...]`.

Writes the run directory of docs/design.md (Contract) into train.output_dir:
config.yaml, metrics.jsonl, checkpoints/last/, backbone.safetensors.
"""
import os
import sys

if __name__ == "__main__":
    # Run by path, Python puts ssl_bf/ first on sys.path, where module names
    # could shadow top-level ones; put the repository root there instead.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == here:
        sys.path[0] = os.path.dirname(here)

from ssl_bf.config import load_config  # noqa: E402
from ssl_bf.errors import exit_on_usage_error  # noqa: E402


def monitors_for(cfg) -> tuple:
    if cfg.knn.every <= 0:
        return ()
    from ssl_bf.evaluation.monitor import KnnMonitor

    return (KnnMonitor(cfg),)


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    from ssl_bf.engine import Trainer  # heavy imports after the config is known to be good

    Trainer(cfg, monitors_for(cfg)).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
