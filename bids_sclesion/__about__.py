__version__ = "0.1.0"
__packagename__ = "bids_sclesion"
__url__ = "https://github.com/bids-sclesion/bids_sclesion"
