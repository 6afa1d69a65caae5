"""Networks: backbones, projection / prediction heads, BatchFormer, split BatchNorm."""
