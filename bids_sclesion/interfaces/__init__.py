"""Nipype interfaces: thin wrappers over the plain functions of core/ and model/."""

#: Images a step writes for the next steps, in the work directory: uncompressed. Each is written once and read a
#: few times; gzip cost about 0.35 s per float map of a 3D volume (384 x 220 x 52), and only the derivatives are kept.
WORK_IMAGE = ".nii"
