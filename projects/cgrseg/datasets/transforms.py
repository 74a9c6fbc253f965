"""Data transforms that record what they did, so that a map computed once
per image (stored teacher targets) can be put through the same geometry
as the image afterwards (:func:`cgrseg.models.segmentors.stored_targets.
warp_to_sample`)."""
from mmseg.datasets.transforms import RandomCrop
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RecordedRandomCrop(RandomCrop):
    """mmseg's ``RandomCrop`` that also keeps the box it cut.

    ``results['crop_bbox'] = (y1, y2, x1, x2)`` in the coordinates of the
    image it was given (after resizing). The box may reach past the image
    (crop larger than the image): the image is then cut to its own size, as
    by ``RandomCrop``, and padded later by the data preprocessor. Pack it
    with ``PackSegInputs(meta_keys=... + ('crop_bbox',))``.
    """

    def crop_bbox(self, results: dict) -> tuple:
        box = super().crop_bbox(results)
        results['crop_bbox'] = tuple(int(v) for v in box)
        return box
