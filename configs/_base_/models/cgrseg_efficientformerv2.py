# CGRSeg-T (EfficientFormerV2-S1 backbone); the B and L configs override the
# sizes. Values are those of the authors' local_configs/cgrseg/cgrseg-t_*.py
# (nizhenliang/CGRSeg).
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512),
    # Test images are padded to a multiple of 32, as the authors tested.
    test_cfg=dict(size_divisor=32))
# EfficientFormerV2-s1 ImageNet weights, timm's copy of the
# original release, downloaded once (local copy: configs/cgrseg/README.md).
imagenet_weights = 'https://huggingface.co/timm/efficientformerv2_s1.snap_dist_in1k/resolve/main/model.safetensors'  # noqa: E501
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='EfficientFormerV2',
        arch='s1',
        out_indices=(0, 1, 2, 3),
        resolution=512,
        # SyncBN with trained statistics, as the released models were
        # trained (docs/porting.md Q16).
        norm_cfg=norm_cfg,
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=imagenet_weights)),
    decode_head=dict(
        type='CGRSegHead',
        in_channels=[48, 120, 224],
        in_index=[1, 2, 3],
        channels=128,
        depthwise_fuse=True,
        neck_depth=5,
        mlp_ratio=2,
        band_kernel_size=11,
        neck_band_kernel_size=11,
        square_kernel_size=3,
        rca_ratio=1,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        # Plain BN in the RCM/RCA blocks, as the released models
        # (docs/porting.md H1).
        block_norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
