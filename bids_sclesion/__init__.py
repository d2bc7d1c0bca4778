"""bids_sclesion: multiple-sclerosis lesion segmentation in the spinal cord, as a BIDS App."""
from .__about__ import __version__, __url__

__all__ = ["__version__", "__url__"]
