# CGRSeg-L: EfficientFormerV2-L, COCO-Stuff-10k 512x512, 4 GPUs x 4 images,
# 40k iterations (sources of each setting: see the CGRSeg-T config).
_base_ = ('./cgrseg_efficientformerv2-s1_4xb4-adamw-40k_'
          'coco-stuff10k-512x512.py')
model = dict(
    backbone=dict(
        arch='l', init_cfg=dict(checkpoint='checkpoint/eformer_l_450.pth')),
    decode_head=dict(
        in_channels=[80, 192, 384],
        channels=256,
        neck_depth=5,
        band_kernel_size=9,
        neck_band_kernel_size=9))
