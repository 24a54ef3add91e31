"""Specs by name and spec_version: validate pins the spec it accepted a version by, and a
later stage uses the version its event names, even after the spec on disk has changed;
a version found nowhere is a typed error, never the spec on disk in its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.events import DatasetValidated, ObjectRef
from shared.layout import pinned_spec_key
from shared.ports import LaunchedTraining, TrainingJobRequest, TrainingLauncher
from shared.services.train_launch import TrainLaunchService
from shared.services.validate import ValidateService
from shared.specs import (
    PACKAGED_SPECS,
    DatasetSpec,
    SpecCatalog,
    SpecInvalid,
    SpecVersionUnknown,
    load_spec,
)
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore
from tests.unit.test_validate_service import SAMPLE, setup

MODELS = "models"


def _write(specs: Path, **training: Any) -> str:
    """The shipped customers spec with ``training`` changed, in ``specs``; its version."""
    doc = yaml.safe_load((PACKAGED_SPECS / "customers.yaml").read_text())
    doc["training"] |= training
    specs.mkdir(parents=True, exist_ok=True)
    (specs / "customers.yaml").write_text(yaml.safe_dump(doc))
    return load_spec("customers", specs).spec_version


def _validate(specs: SpecCatalog) -> DatasetValidated:
    """One upload of the sample through validate, whose catalog is ``specs``."""
    _, store, bus, lineage, event = setup(SAMPLE.read_bytes())
    svc = ValidateService(
        store, bus, lineage, curated_container="c", quarantine_container="q", specs=specs
    )
    assert svc.handle(event).status == "validated"
    [validated] = bus.events
    assert isinstance(validated, DatasetValidated)
    return validated


class Recording(TrainingLauncher):
    def __init__(self) -> None:
        self.requests: list[TrainingJobRequest] = []

    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        self.requests.append(request)
        return LaunchedTraining(job_name="job-1", instance_type="gpu", created=True)


def test_validate_pins_the_exact_spec_it_accepted_a_version_by(tmp_path: Path) -> None:
    store = MemoryStore()
    version = _write(tmp_path, entrypoint="acme.v1")
    validated = _validate(SpecCatalog(tmp_path, store=store, container=MODELS))
    assert validated.spec_version == version
    pinned, meta, _ = store.objects[(MODELS, pinned_spec_key("customers", version))]
    assert meta["spec_version"] == version
    again = DatasetSpec.model_validate(yaml.safe_load(pinned))
    assert again.spec_version == version  # the copy reads back as the same version


def test_train_launch_builds_the_job_from_the_validated_version_after_the_spec_changed(
    tmp_path: Path,
) -> None:
    """The spec on disk is edited (and deployed) between validate and train-launch: the job
    is labelled with the validated version and built from it, not from the new one."""
    store = MemoryStore()
    specs = SpecCatalog(tmp_path, store=store, container=MODELS)
    _write(tmp_path, entrypoint="acme.v1", hyperparameters={"n_estimators": 11})
    validated = _validate(specs)
    now = _write(tmp_path, entrypoint="acme.v2", hyperparameters={"n_estimators": 22})
    assert now != validated.spec_version
    launcher = Recording()
    TrainLaunchService(launcher, MemoryBus(), MemoryLineage(), backend="local", specs=specs).handle(
        validated
    )
    [req] = launcher.requests
    assert req.spec_version == validated.spec_version
    assert req.hyperparameters["dhow_spec_version"] == validated.spec_version
    assert (req.entrypoint, req.hyperparameters["n_estimators"]) == ("acme.v1", "11")


def test_a_stage_uses_the_version_its_event_names_not_the_one_on_disk(tmp_path: Path) -> None:
    store = MemoryStore()
    specs = SpecCatalog(tmp_path, store=store, container=MODELS)
    old = _write(tmp_path, max_runtime_s=600)
    specs.pin(specs.current("customers"))
    new = _write(tmp_path, max_runtime_s=900)
    assert specs.get("customers", old).training.max_runtime_s == 600
    assert specs.get("customers", new).training.max_runtime_s == 900
    assert specs.current("customers").spec_version == new


def test_an_unknown_version_is_a_typed_error_with_a_hint(tmp_path: Path) -> None:
    store = MemoryStore()
    _write(tmp_path)
    specs = SpecCatalog(tmp_path, store=store, container=MODELS)
    with pytest.raises(SpecVersionUnknown) as caught:
        specs.get("customers", "3+00000000")
    assert caught.value.reason == "spec_version_unknown"
    assert "3+00000000" in caught.value.message
    assert caught.value.hint
    # Without a store only the spec on disk is known, and only by its own version.
    with pytest.raises(SpecVersionUnknown):
        SpecCatalog(tmp_path).get("customers", "3+00000000")
    # And the train-launch of an event naming it fails with that error, launching nothing.
    launcher = Recording()
    event = DatasetValidated(
        dataset="customers",
        correlation_id="u-1",
        sha256="ab" * 32,
        rows=1,
        spec_version="3+00000000",
        curated=ObjectRef(container="curated", key="k"),
    )
    svc = TrainLaunchService(launcher, MemoryBus(), MemoryLineage(), backend="local", specs=specs)
    with pytest.raises(SpecVersionUnknown):
        svc.handle(event)
    assert launcher.requests == []


def test_a_pinned_copy_that_is_not_its_version_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    specs = SpecCatalog(tmp_path, store=store, container=MODELS)
    old = _write(tmp_path, max_runtime_s=600)
    ref = specs.pin(specs.current("customers"))
    assert ref is not None
    _write(tmp_path, max_runtime_s=900)
    edited = load_spec("customers", tmp_path).to_yaml().encode()
    store.put_bytes(ref, edited)  # someone wrote another spec under the old version's key
    with pytest.raises(SpecInvalid):
        specs.get("customers", old)
