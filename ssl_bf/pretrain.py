"""Pretrain a backbone: `accelerate launch ssl_bf/pretrain.py recipe=mocov3_bf [key=value ...]`.

Writes the run directory of docs/design.md (Contract) into train.output_dir:
config.yaml, metrics.jsonl, checkpoints/last/, backbone.safetensors.
"""
import sys

from ssl_bf.config import load_config
from ssl_bf.errors import exit_on_usage_error


def monitors_for(cfg) -> tuple:
    if cfg.knn.every <= 0:
        return ()
    from ssl_bf.evaluation.monitor import KnnMonitor

    return (KnnMonitor(cfg),)


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    cfg = load_config(sys.argv[1:] if argv is None else argv)
    from ssl_bf.training.engine import Trainer  # heavy imports after the config is known to be good

    Trainer(cfg, monitors_for).fit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
