"""augmentation stage: seeded MONAI dictionary transforms chosen by modality.

Samples are dicts ``{"image": float32 (1, *spatial), "label": uint8/int (1, *spatial)}``
(channel first; spatial ``(H, W)`` or ``(X, Y, Z)``).  Spatial transforms move
image and label together, the label always with nearest neighbour;
intensity transforms touch the image only.
"""

from kidneyseg.augmentation.transforms import (
    MIRRORS,
    US_FLIP_AXIS,
    augmentation_names,
    build_train_transform,
    flip_axes,
    left_right_axis,
)

__all__ = ["MIRRORS", "US_FLIP_AXIS", "augmentation_names", "build_train_transform", "flip_axes", "left_right_axis"]
