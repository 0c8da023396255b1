"""Post-processing of predicted label maps: components, small blobs, holes, lesion consistency.

Public functions (all take spacing in mm and thresholds in mL):

- :func:`postprocess_label`: the default clean-up run by ``kidneyseg predict``.
- :func:`keep_largest_components`, :func:`remove_small_components`,
  :func:`fill_holes`, :func:`touching`, :func:`label_components`.
- :func:`drop_hesitant_components`: components with a low mean probability (2D CT slices).
- :func:`area_floor_ml`: the 2D floor that matches a 3D small-blob floor.
"""

from kidneyseg.postprocessing.components import (
    area_floor_ml,
    component_sizes,
    drop_hesitant_components,
    fill_holes,
    keep_largest_components,
    label_components,
    postprocess_label,
    remove_small_components,
    touching,
)

__all__ = [
    "area_floor_ml",
    "component_sizes",
    "drop_hesitant_components",
    "fill_holes",
    "keep_largest_components",
    "label_components",
    "postprocess_label",
    "remove_small_components",
    "touching",
]
