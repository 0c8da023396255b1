"""Post-processing of predicted label maps: components, small blobs, holes, lesion consistency.

Public functions (all take spacing in mm and thresholds in mL):

- :func:`postprocess_label`: the default clean-up run by ``kidneyseg predict``.
- :func:`keep_largest_components`, :func:`remove_small_components`,
  :func:`fill_holes`, :func:`touching`, :func:`label_components`.
"""

from kidneyseg.postprocessing.components import (
    component_sizes,
    fill_holes,
    keep_largest_components,
    label_components,
    postprocess_label,
    remove_small_components,
    touching,
)

__all__ = [
    "component_sizes",
    "fill_holes",
    "keep_largest_components",
    "label_components",
    "postprocess_label",
    "remove_small_components",
    "touching",
]
