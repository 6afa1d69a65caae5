"""ssl_bf: MoCo-v2 / MoCo-v3 pretraining with an optional BatchFormer, on accelerate."""

__version__ = "0.1.0"
