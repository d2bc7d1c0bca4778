"""The participant level on real spinal cord images (../shared/data), skipped when absent."""
import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.cli.run import main
from bids_sclesion.core.metrics import dice

from .conftest import requires_shared

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_participant_level_on_spine_mini_bids(tmp_path, capsys):
    bids = requires_shared("spine-mini-bids")
    out, work = tmp_path / "out", tmp_path / "work"
    code = main([str(bids), str(out), "participant", "-w", str(work), "--participant-label", "unf01",
                 "--contrast", "T2w", "T1w", "T2star", "--skip-bids-validation", "--nprocs", "1"])
    assert code == 0, capsys.readouterr()
    for suffix in ("T2w", "T1w", "T2star"):
        src = nib.load(str(bids / "sub-unf01" / "anat" / f"sub-unf01_{suffix}.nii.gz"))
        cord = nib.load(str(out / "sub-unf01" / "anat" / f"sub-unf01_space-orig_label-SC_desc-{suffix}_mask.nii.gz"))
        lesion = nib.load(str(out / "sub-unf01" / "anat" / f"sub-unf01_space-orig_label-lesion_desc-{suffix}_mask.nii.gz"))
        assert cord.shape == src.shape and np.allclose(cord.affine, src.affine, atol=1e-4)
        c, l_ = np.asarray(cord.dataobj) > 0, np.asarray(lesion.dataobj) > 0
        assert not np.any(l_ & ~c)
        manual = bids / "derivatives/labels/sub-unf01/anat" / f"sub-unf01_{suffix}_seg-manual.nii.gz"
        if manual.exists():
            score = dice(c, np.asarray(nib.load(str(manual)).dataobj) > 0.5)
            print(f"real {suffix}: cord Dice {score:.3f}")
            assert c.sum() > 0, "the cord is found on real anatomy"
