"""kidneyseg: kidney, kidney tumour and cyst segmentation in CT, MR and 2D ultrasound.

The package is organised by pipeline stage::

    io -> preprocessing -> models -> training -> inference -> postprocessing
       -> evaluation -> reporting

A lower stage never imports a higher one.  Heavy dependencies (torch, MONAI,
matplotlib) are imported inside the functions that need them, so ``import
kidneyseg`` and the label registry stay light.
"""

from kidneyseg.case import Case
from kidneyseg.errors import KidneysegError

__version__ = "0.1.0"

__all__ = ["Case", "KidneysegError", "__version__"]
