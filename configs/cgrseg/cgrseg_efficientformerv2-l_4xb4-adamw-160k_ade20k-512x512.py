# CGRSeg-L: EfficientFormerV2-L, ADE20K 512x512, 4 GPUs x 4 images, 160k.
_base_ = './cgrseg_efficientformerv2-s1_4xb4-adamw-160k_ade20k-512x512.py'
# EfficientFormerV2-L ImageNet weights, timm's copy of the
# original release, downloaded once (local copy: configs/cgrseg/README.md).
imagenet_weights = 'https://huggingface.co/timm/efficientformerv2_l.snap_dist_in1k/resolve/main/model.safetensors'  # noqa: E501
model = dict(
    backbone=dict(
        arch='l', init_cfg=dict(checkpoint=imagenet_weights)),
    decode_head=dict(
        in_channels=[80, 192, 384],
        channels=256,
        neck_depth=5,
        band_kernel_size=9,
        neck_band_kernel_size=9))
