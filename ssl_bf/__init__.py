"""ssl_bf: MoCo-v2 / MoCo-v3 pretraining with an optional BatchFormer, on accelerate.

    import ssl_bf
    backbone = ssl_bf.load_backbone("runs/mocov3_bf")
    model = ssl_bf.load_timm("runs/mocov3_bf")  # the same backbone as a timm model (needs timm)
    cfg = ssl_bf.load_config(["recipe=mocov3_bf", "model.width=0.25"])
    model = ssl_bf.build_model(cfg)
"""

__version__ = "0.1.0"
__all__ = ["Config", "load_config", "build_model", "load_backbone", "load_timm"]


def __getattr__(name: str):
    # Lazy: the CLIs import ssl_bf.config first to reject a bad config before
    # paying for torch / torchvision / lightly imports.
    if name == "Config":
        from ssl_bf.config.schema import Config
        return Config
    if name == "load_config":
        from ssl_bf.config import load_config
        return load_config
    if name in ("build_model", "load_backbone", "load_timm"):
        from ssl_bf import api
        return getattr(api, name)
    raise AttributeError(f"module 'ssl_bf' has no attribute {name!r}")
