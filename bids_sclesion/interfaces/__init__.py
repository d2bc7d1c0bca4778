"""Nipype interfaces: thin wrappers over the plain functions of core/ and model/."""
