__version__ = "0.2.0"
#: Bumped when this version computes different results than before (revision 2: images resampled
#: up to the outer edge of their end voxels; revision 3: centreline fits no rougher than a 20 mm bend,
#: and the straight grid's end margins continue the centreline straight, with its end frame; revision 4:
#: the phantoms' labels are centred on their voxels, a quarter millimetre off before along axes whose
#: partial-volume box spans an even number of fine voxels, and a stage 2 trained on fine lesion maps
#: is averaged over each thick voxel on the way back; revision 5: lesions grow by hysteresis down to
#: ``--grow-threshold``). Part of
#: every cache key (work directory nodes, training cache), so that results cached by an earlier
#: revision are recomputed.
__results_revision__ = 5
__packagename__ = "bids_sclesion"
__url__ = "https://github.com/bids-sclesion/bids_sclesion"
