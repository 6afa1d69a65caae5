"""The typed configuration: every key a recipe or a `key=value` override may set.

Defaults here are neutral; the recipes under recipes/ set (and cite) the
paper values. A key that is not a field below is an error (docs/design.md, Contract).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from ssl_bf.config.methods import MethodName


@dataclass
class MethodConfig:
    name: MethodName = "mocov3"  # config/methods.py registers the names
    temperature: float = 0.2
    momentum: float = 0.99  # key-encoder EMA (v3: start of the cosine to momentum_end)
    momentum_end: Optional[float] = None  # null = constant momentum (MoCo-v2)
    # MoCo-v2
    queue_size: int = 4096
    symmetric: bool = False
    bn_splits: int = 8  # one-process stand-in for shuffle-BN (official CIFAR demo)
    # heads
    proj_hidden: Optional[int] = None  # null = the backbone's feature dim (official MoCo-v2 head)
    proj_out: int = 128
    proj_layers: int = 2  # Linear layers of the projector (v2 and v3)
    # MoCo-v2: BatchNorm after each hidden Linear (the official head has none; the BatchFormer
    # authors' MoCo-v2 head has it, builder_v2.py L54-64). MoCo-v3's projector always has it.
    proj_bn: bool = False
    pred_hidden: int = 4096  # MoCo-v3 only


@dataclass
class ModelConfig:
    backbone: Literal["resnet18", "resnet50", "vit_tiny", "vit_small"] = "resnet18"
    width: float = 1.0  # ResNet channel multiplier (0.25 = quarter width, for CPUs)
    cifar_stem: Optional[bool] = None  # null = auto (image_size <= 64)
    zero_init_residual: bool = False
    # ViT; null = 4 up to 64 px (8x8 tokens at 32 px), else ViT's 16
    patch_size: Optional[int] = None
    vit_depth: Optional[int] = None  # ViT; null = 12
    freeze_patch_embed: bool = False  # MoCo-v3's --stop-grad-conv1 for ViT


@dataclass
class BatchFormerConfig:
    enabled: bool = False
    position: Literal["post_projector", "pre_projector"] = "post_projector"
    # Which samples attend to each other: local = this process's batch (the authors' per-GPU
    # layer); global = every process's; split = each group that split BN normalises apart
    # (method.bn_splits on one MoCo-v2 process: the devices it stands in for; = local elsewhere)
    scope: Literal["local", "global", "split"] = "local"
    trainable: bool = True
    layers: int = 1
    heads: int = 4
    dropout: float = 0.5
    ffn_dim: Optional[int] = None  # null = the feature dimension, as the authors' layer
    norm_first: bool = False  # pre-norm layer instead of the authors' post-norm
    loss_weight: float = 1.0
    lr_scale: float = 1.0
    # stop the BF stream's gradient into the encoder (a shared BN head still couples)
    detach: bool = False
    mask_self: bool = False  # attention may not look at the sample itself
    # sample i's loss sends no gradient into its batch-mates' features
    stop_mates_grad: bool = False
    start_epoch: float = 0.0  # the BF term joins the loss after this many epochs
    gate_init: Optional[float] = None  # gated residual x + g*(BF(x) - x), g learnt from this
    # The authors' design (zhihou7/BatchFormer moco-v3/moco/builder.py, builder_v2.py): the key
    # encoder runs the SAME module (not an EMA copy) at the same position, so keys come in a
    # plain and a BatchFormer stream too. Keys never get a gradient.
    keys: bool = False
    # How the streams make the loss: weighted = (L_plain + w L_bf) / (1 + w), queries' BF stream
    # against the plain keys (ours); pair_sum / pair_mean = the sum / mean of the loss of every
    # (query stream, key stream) pairing (the authors' MoCo-v3 / MoCo-v2).
    loss: Literal["weighted", "pair_sum", "pair_mean"] = "weighted"
    # MoCo-v2 with bf.keys: shared = one queue takes both key streams and scores every pairing
    # (their builder_v2.py); per_stream = each key stream has its own queue and a pairing is
    # scored against its positive's stream (ours: their streams sit far apart at init).
    queue: Literal["shared", "per_stream"] = "shared"


@dataclass
class DataConfig:
    dataset: Literal["cifar10", "cifar100", "stl10", "imagefolder"] = "cifar10"
    root: str = "data/cifar10"
    subset: Optional[int] = None
    # Long-tailed pretraining (Cui et al., CVPR 2019): class c keeps its first
    # floor(n_max * R^(-c/(C-1))) images; null = the split as it is.
    imbalance: Optional[float] = None
    # What the kNN bank and the linear probe train on: full = the whole labelled train split
    # (balanced), pretrain = the pretraining images; null = full with data.imbalance, else pretrain.
    eval_train: Optional[Literal["full", "pretrain"]] = None
    image_size: int = 32
    num_workers: Optional[int] = None  # null = auto
    cache_gb: float = 8.0  # decode into memory when the decoded set fits (0 = never)
    download: bool = False
    strict: bool = False  # a corrupt image is an error instead of being replaced
    # Where shards read from a URL are kept, and the cache's cap (data/shard_cache.py)
    shard_cache: str = "~/.cache/ssl_bf/shards"
    shard_cache_gb: float = 50.0


@dataclass
class AugConfig:
    min_scale: float = 0.2
    cj_strength: float = 1.0
    blur: bool = True  # the method's Gaussian-blur probabilities, or none
    solarize: bool = True  # MoCo-v3's solarisation on view 2, or none
    # Views made on the training device as batched tensor ops from uint8 images (same
    # distributions as lightly's PIL transforms, ssl_bf/data/batched_views.py); false =
    # lightly's PIL transforms in the loader workers. The recipes choose (CIFAR, ImageNet: true).
    batched: bool = False


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256  # global, across processes and accumulation steps
    max_steps: Optional[int] = None
    output_dir: str = "runs/default"
    seed: int = 0
    precision: Literal["no", "bf16", "fp16"] = "no"
    resume: Optional[str] = None  # null | auto | PATH
    # Keys a resume may change although they change how the run trains (each recorded in
    # the run's config_changes.jsonl); fnmatch patterns, e.g. [method.temperature, bf.*].
    allow_changes: list[str] = field(default_factory=list)
    optimizer: Literal["sgd", "lars", "adamw"] = "sgd"
    lr: float = 0.03  # per 256 samples: lr = lr * batch_size / 256
    weight_decay: float = 1e-4
    sgd_momentum: float = 0.9
    lars_eta: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    exclude_norm_bias: bool = False  # no weight decay / LARS scaling on BN and biases
    warmup_epochs: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"  # lr after the warmup
    accumulate: int = 1
    checkpoint_every: int = 0  # steps between extra checkpoints (0 = epoch ends only)
    keep_checkpoints: int = 2
    log_every: int = 10
    # Steps between reads of the device's flags (non-finite losses or gradients, a stop
    # signal): a step in between never waits on the GPU (training/step_stats.py). A read
    # drains the GPU's queue, which then idles while the host queues the next step's
    # kernels - a few ms, under 1% of 10 steps of >= 100 ms; a stop signal or a non-finite
    # value is then acted on within 10 steps, and a checkpoint always checks first.
    check_every: int = 10
    # NHWC activations: faster steps on CPUs (benchmarks/BENCHMARKS.md §1) and what
    # tensor-core convolutions want on GPUs.
    channels_last: bool = True
    compile: bool = False
    # CUDA only. cudnn.benchmark: the shapes of a run are fixed, so cuDNN's autotuner picks the
    # fastest convolution once (PyTorch's "Performance Tuning Guide"); tf32: fp32 matmuls and
    # convolutions on Ampere+ tensor cores (10-bit mantissa inputs, fp32 accumulation), as
    # most SSL codes train. Set false for bit-reproducible fp32 (with
    # torch.use_deterministic_algorithms in your own script).
    cudnn_benchmark: bool = True
    tf32: bool = True
    threads: Optional[int] = None  # null = every core this process may use
    on_nan: Literal["stop", "skip"] = "stop"


@dataclass
class KnnConfig:
    every: int = 0  # epochs between monitor runs (0 = off); the last epoch always runs
    k: list[int] = field(default_factory=lambda: [20, 200])  # knn_top1 = top-1 at the LAST k
    temperature: float = 0.1  # votes weigh exp(s / T) (Wu et al. 2018)
    test_subset: Optional[int] = None  # first N test images (stratified) as queries
    batch_size: int = 512  # images per forward pass per process during feature extraction


@dataclass
class LinearConfig:
    mode: Literal["cached", "standard"] = "cached"
    epochs: int = 100
    batch_size: int = 256  # global, across processes (feature extraction: per process)
    # per 256 samples (lr * batch_size / 256): MoCo-v2's main_lincls.py, ImageNet ResNet-50;
    # the CIFAR recipes set 0.1
    lr: float = 30.0
    weight_decay: float = 0.0
    schedule: Literal["step", "cosine"] = "step"  # per epoch, as main_lincls.py
    milestones: list[int] = field(default_factory=lambda: [60, 80])  # step: lr x0.1 at each
    copies: int = 1  # cached mode: the plain train set + (copies - 1) augmented copies


@dataclass
class ProbeConfig:
    # A linear head on the detached backbone features of the labelled pretraining views,
    # trained alongside (training/online_probe.py); its test top-1 joins the kNN monitor's
    # lines as online_top1. The backbone trains exactly as without it.
    online: bool = False
    # per 256 samples, on the training cosine (lightly's / solo-learn's online probe)
    lr: float = 0.1
    weight_decay: float = 0.0


@dataclass
class LogConfig:
    with_: Literal["none", "tensorboard", "wandb"] = "none"
    project: str = "ssl_bf"


@dataclass
class Config:
    method: MethodConfig = field(default_factory=MethodConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    bf: BatchFormerConfig = field(default_factory=BatchFormerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    recipe: Optional[str] = None  # the recipe this config was built from
