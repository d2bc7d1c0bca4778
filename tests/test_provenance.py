"""Provenance of a run: model records, the settings file, the methods text."""
import hashlib
import tomllib

from bids_sclesion.model.io import resolve_model
from bids_sclesion.model.metadata import model_identity as model_record
from bids_sclesion.provenance import citation_text, run_provenance, to_toml


def test_model_record_names_version_and_weights_hash():
    record = model_record(resolve_model("stage2"))
    weights = (resolve_model("stage2") / "model.safetensors").read_bytes()
    assert record["SHA256"] == hashlib.sha256(weights).hexdigest()
    assert record["Version"] == "4.1.0", "the model's own version, not the software's"
    assert model_record(resolve_model("stage1"))["Version"] != record["Version"]


def test_run_provenance_is_written_as_toml_that_reads_back():
    provenance = run_provenance(model_record(resolve_model("stage1")), model_record(resolve_model("stage2")),
                                {"Threshold": 0.5, "MinLesionVolumeMM3": 5.0, "TTA": False, "Contrasts": ["T2w"]})
    assert set(provenance["Models"]) == {"Stage1", "Stage2"} and provenance["ResultsRevision"] >= 1
    text = to_toml({"settings": provenance["Settings"], "models": provenance["Models"],
                    "execution": {"nprocs": 2, "missing": None, "path": 'C:\\\\a "quoted" path'}})
    back = tomllib.loads(text)
    assert back["settings"] == provenance["Settings"]
    assert back["models"]["Stage2"]["SHA256"] == provenance["Models"]["Stage2"]["SHA256"]
    assert back["execution"] == {"nprocs": 2, "path": 'C:\\\\a "quoted" path'}
    text = citation_text(provenance)
    assert "N4" in text and "stage2 `stage2` version 4.1.0" in text and "References" in text
    single = run_provenance(model_record(resolve_model("default")), None, {"Threshold": 0.5, "MinLesionVolumeMM3": 5.0})
    assert set(single["Models"]) == {"Model"}


def test_the_cord_locator_is_recorded_and_cited():
    provenance = run_provenance(model_record(resolve_model("stage1")), model_record(resolve_model("stage2")),
                                {"Threshold": 0.5, "MinLesionVolumeMM3": 5.0},
                                locator=model_record(resolve_model("stage1_2mm")))
    assert provenance["Models"]["CordLocator"]["Name"] == "stage1_2mm"
    text = citation_text(provenance)
    assert "cord locator `stage1_2mm` version 2.0.0" in text and "inside a box around the cord" in text
    assert "inside a box" not in citation_text(run_provenance(model_record(resolve_model("stage1")), None, {}))


def test_the_stage1_fallback_is_recorded_and_cited():
    provenance = run_provenance(model_record(resolve_model("stage1_2mm")), model_record(resolve_model("stage2")),
                                {"Threshold": 0.5}, fallback=model_record(resolve_model("stage1")))
    assert provenance["Models"]["Stage1Fallback"]["Name"] == "stage1"
    text = citation_text(provenance)
    assert "stage-1 fallback `stage1`" in text and "segmented the whole image again" in text
    assert "fallback" not in citation_text(run_provenance(model_record(resolve_model("stage1")), None, {}))


def test_the_lesion_growth_is_cited_only_when_it_grows():
    stage1 = model_record(resolve_model("stage1_2mm"))
    grown = citation_text(run_provenance(stage1, None, {"Threshold": 0.5, "LesionGrowThreshold": 0.3}))
    assert "grown into the voxels connected to it of probability at least 0.3 (hysteresis)" in grown
    plain = citation_text(run_provenance(stage1, None, {"Threshold": 0.5, "LesionGrowThreshold": 0.5}))
    assert "hysteresis" not in plain
