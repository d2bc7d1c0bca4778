"""Per-image workflow: reorient -> N4 -> segmentation -> original grid -> masks -> derivatives."""
from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from .. import __version__
from ..__about__ import __results_revision__
from ..config import RunSettings
from ..interfaces.bids import DerivativesSink, WarpsSink
from ..interfaces.image import N4BiasCorrection, ResampleToOriginal, Reorient
from ..interfaces.morphometry import CordMorphometry
from ..interfaces.segmentation import PostprocessLesions, SegmentCordLesion, SegmentStraightened
from ..interfaces.straighten import CheckSpinalCord, CordStraighteningWarps

#: Cached nodes whose results depend on the code, not only on their inputs, recompute when this changes.
_SOFTWARE = f"{__version__}+r{__results_revision__}"


def _stage1_node(seg, omp_nthreads: int) -> pe.Node:
    """The whole-image segmentation (stage 1 of the cascade), with its cord locator and fallback."""
    return pe.Node(
        SegmentCordLesion(model=seg.model, model_hash=seg.model_hash, locator=seg.locator or "",
                          locator_hash=seg.locator_hash, fallback=seg.fallback or "", fallback_hash=seg.fallback_hash,
                          threshold=seg.threshold, software_version=_SOFTWARE, device=seg.device,
                          precision=seg.precision, num_threads=omp_nthreads, flips=seg.stage1_flips),
        name="segment_cord_lesion",
        n_procs=omp_nthreads,
        mem_gb=2.0,
    )


def init_anat_lesion_wf(*, source_file: str, settings: RunSettings, name: str = "anat_lesion_wf") -> pe.Workflow:
    """Segment the cord and MS lesions of one anatomical image.

    Single stage (no ``stage2_model`` in ``settings.segmentation``): ``model``
    gives the final probabilities; the straightening warps come from its cord.
    Cascade: ``model`` finds the cord on the whole image (stage 1), the cord is
    straightened and cropped, and ``stage2_model`` segments cord and lesions
    there at full resolution; its probabilities are mapped back to the
    source grid. ``cord_fusion="mean"`` averages the two stages' cord
    probabilities (stage 1 has seen real cords, stage 2 works at 0.5 mm);
    ``"stage2"`` keeps stage 2's alone. ``tta`` adds stage-2 predictions on
    flipped copies: a voxel uncertainty map and a confidence per lesion.
    The user's disc labels of this image (``settings.disc_labels``) replace
    the template-matched discs for its vertebral levels.

    Inputs are fixed at construction (one workflow per image) so that the
    work directory caches each node by the image's content.
    """
    seg = settings.segmentation
    bids_dir, output_dir, omp_nthreads = settings.bids_dir, settings.output_dir, seg.omp_nthreads
    stage2_model = seg.stage2_model
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=["source_file"]), name="inputnode")
    inputnode.inputs.source_file = source_file

    reorient = pe.Node(Reorient(), name="reorient", mem_gb=0.5)
    n4 = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_bias_correction", n_procs=omp_nthreads, mem_gb=1.0)
    segment = _stage1_node(seg, omp_nthreads)
    merge = pe.Node(niu.Merge(2), name="merge_probabilities", run_without_submitting=True)
    to_original = pe.Node(ResampleToOriginal(software_version=_SOFTWARE), name="to_original_grid", mem_gb=0.5)
    split = pe.Node(niu.Split(splits=[1, 1], squeeze=True), name="split_probabilities", run_without_submitting=True)
    post = pe.Node(PostprocessLesions(threshold=seg.threshold, grow_threshold=seg.grow_threshold,
                                      min_lesion_mm3=seg.min_lesion_mm3), name="postprocess_lesions",
                   mem_gb=0.5)
    morphometry = pe.Node(CordMorphometry(), name="cord_morphometry", mem_gb=0.5)
    if source_file in settings.disc_labels:
        morphometry.inputs.disc_labels = settings.disc_labels[source_file]
    sink = pe.Node(
        DerivativesSink(bids_dir=bids_dir, out_dir=output_dir, threshold=seg.threshold, provenance=settings.provenance),
        name="ds_lesions",
        run_without_submitting=True,
    )

    # The warps have their own sink, so the lesion outputs do not wait on it; an image
    # without a plausible spinal cord is refused by stage 2 (cascade) or check_spinal_cord.
    straighten = pe.Node(CordStraighteningWarps(software_version=_SOFTWARE), name="straightening_warps", mem_gb=1.0)
    if stage2_model:
        space = straight_space_of(stage2_model)
        straighten.inputs.radius_mm = space.radius_mm
        straighten.inputs.spacing_mm = tuple(space.spacing_mm)
    ds_warps = pe.Node(WarpsSink(bids_dir=bids_dir, out_dir=output_dir), name="ds_warps",
                       run_without_submitting=True)

    wf.connect([
        (split, straighten, [("out1", "cord_prob")]),
        (inputnode, ds_warps, [("source_file", "source_file")]),
        (straighten, ds_warps, [("to_straight_xfm", "to_straight_xfm"), ("to_orig_xfm", "to_orig_xfm"),
                                ("cord_length_mm", "cord_length_mm")]),
        (inputnode, reorient, [("source_file", "in_file")]),
        (reorient, n4, [("out_file", "in_file")]),
        (n4, segment, [("out_file", "in_file")]),
        (segment, merge, [("cord_prob", "in1"), ("lesion_prob", "in2")]),
        (merge, to_original, [("out", "in_files")]),
        (inputnode, to_original, [("source_file", "reference")]),
        (to_original, split, [("out_files", "inlist")]),
        (inputnode, sink, [("source_file", "source_file")]),
        (post, sink, [("cord_mask", "cord_mask"), ("lesion_mask", "lesion_mask")]),
        (inputnode, morphometry, [("source_file", "source_file")]),
        (post, morphometry, [("cord_mask", "cord_mask"), ("lesion_mask", "lesion_mask"),
                             ("lesion_table", "lesion_table")]),
        (morphometry, sink, [("lesion_table", "lesion_table"), ("level_map", "level_map"),
                             ("disc_table", "disc_table"), ("csa_table", "csa_table"),
                             ("level_table", "level_table"), ("levels_info", "levels_info")]),
        (segment, sink, [("model_name", "model_name"), ("model_version", "model_version"),
                         ("precision", "precision"), ("fallback_used", "stage1_fallback_used")]),
    ])  # fmt: skip
    if not stage2_model:
        # The cascade refuses an image without a spinal cord when it straightens it;
        # alone, the whole-image model must not report lesions in, say, a brain.
        check = pe.Node(CheckSpinalCord(threshold=seg.threshold), name="check_spinal_cord", mem_gb=0.5)
        wf.connect([
            (split, check, [("out1", "cord_prob")]),
            (check, post, [("cord_prob", "cord_prob")]),
            (split, post, [("out2", "lesion_prob")]),
            (split, sink, [("out2", "lesion_prob")]),
        ])  # fmt: skip
        return wf
    stage2 = pe.Node(
        SegmentStraightened(model=stage2_model, model_hash=seg.stage2_model_hash, software_version=_SOFTWARE,
                            device=seg.device, precision=seg.precision, num_threads=omp_nthreads, tta=seg.tta),
        name="segment_straightened_cord",
        n_procs=omp_nthreads,
        mem_gb=2.0,
    )
    wf.connect([
        (n4, stage2, [("out_file", "in_file")]),
        (inputnode, stage2, [("source_file", "reference")]),
        (split, stage2, [("out1", "cord_prob")]),
        (straighten, stage2, [("to_straight_xfm", "to_straight_xfm"), ("to_orig_xfm", "to_orig_xfm")]),
        (stage2, post, [("cord_prob", "cord_prob"), ("lesion_prob", "lesion_prob")]),
        (stage2, sink, [("lesion_prob", "lesion_prob"), ("model_name", "stage2_model_name"),
                        ("precision", "stage2_precision")]),
    ])  # fmt: skip
    if seg.tta:
        wf.connect([
            (stage2, post, [("lesion_copies", "lesion_copies")]),
            (post, sink, [("lesion_uncertainty", "lesion_uncertainty")]),
        ])  # fmt: skip
    if seg.cord_fusion == "mean":
        wf.connect(split, "out1", post, "extra_cord_prob")
    return wf


def straight_space_of(model: str):
    from ..model.cascade import StraightSpace
    from ..model.io import resolve_model
    from ..model.metadata import read_metadata

    meta = read_metadata(resolve_model(model))
    if meta.get("space") != "straight":
        raise ValueError(f"model '{model}' was not trained on the straightened cord (space: {meta.get('space')})")
    return StraightSpace.from_dict(meta.get("straight_space") or {})
