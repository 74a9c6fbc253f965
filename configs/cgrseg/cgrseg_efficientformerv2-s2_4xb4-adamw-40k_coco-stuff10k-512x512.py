# CGRSeg-B: EfficientFormerV2-S2, COCO-Stuff-10k 512x512, 4 GPUs x 4 images,
# 40k iterations (sources of each setting: see the CGRSeg-T config).
_base_ = ('./cgrseg_efficientformerv2-s1_4xb4-adamw-40k_'
          'coco-stuff10k-512x512.py')
# EfficientFormerV2-s2 ImageNet weights, timm's copy of the
# original release, downloaded once (local copy: configs/cgrseg/README.md).
imagenet_weights = 'https://huggingface.co/timm/efficientformerv2_s2.snap_dist_in1k/resolve/main/model.safetensors'  # noqa: E501
model = dict(
    backbone=dict(
        arch='s2',
        init_cfg=dict(checkpoint=imagenet_weights)),
    decode_head=dict(
        in_channels=[64, 144, 288], channels=256, neck_depth=6))
