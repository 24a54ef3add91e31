"""A spec marks its personal-data columns in its ``privacy`` section; a mark on a column
the schema lacks is refused, and a spec without marks keeps its spec_version."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.specs import SpecInvalid, load_spec, specs_dir


def _write(tmp_path: Path, privacy: object) -> Path:
    doc = yaml.safe_load((specs_dir() / "customers.yaml").read_text())
    if privacy is not None:
        doc["privacy"] = privacy
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path


def test_marked_columns_are_listed_in_the_schema_order(tmp_path: Path) -> None:
    marks = {
        "emirate": {"personal_data": True},
        "customer_id": {"personal_data": True},
        "segment": {"personal_data": False},
    }
    spec = load_spec("customers", _write(tmp_path, marks))
    assert spec.personal_data_columns == ["customer_id", "emirate"]
    # A new mark is a new spec version, and it is written back with the spec.
    assert spec.spec_version != load_spec("customers").spec_version
    assert yaml.safe_load(spec.to_yaml())["privacy"]["emirate"] == {"personal_data": True}


def test_a_mark_on_an_unknown_column_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecInvalid, match="phone"):
        load_spec("customers", _write(tmp_path, {"phone": {"personal_data": True}}))
    with pytest.raises(SpecInvalid):
        load_spec("customers", _write(tmp_path, {"age": {"personal": True}}))


def test_no_marks_keep_the_spec_version(tmp_path: Path) -> None:
    shipped = load_spec("customers")
    assert shipped.personal_data_columns == []
    assert "privacy" not in yaml.safe_load(shipped.to_yaml())
    assert load_spec("customers", _write(tmp_path, {})).spec_version == shipped.spec_version
