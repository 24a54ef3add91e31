"""A dataset whose AWS names a service would refuse is refused by the stack's config check,
before `pulumi up` creates anything: a dataset name may have 63 characters, but a
schedule's or a serve function's name holds 64 in all, stage and prefixes included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from botocore.session import get_session

from infra.config import StackConfigError, check, dataset_resource_names

ROOT = Path(__file__).resolve().parents[2]
LONGEST_STAGE = "s" * 21


def _specs(tmp_path: Path, dataset: str) -> Path:
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["name"] = dataset
    (tmp_path / f"{dataset}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path


def _limit(service: str, operation: str, member: str) -> int:
    model = get_session().get_service_model(service).operation_model(operation)
    return int(model.input_shape.members[member].metadata["max"])


def test_a_dataset_too_long_for_its_schedule_name_is_refused_with_what_to_shorten(
    tmp_path: Path,
) -> None:
    dataset = "d" * 40
    names = dataset_resource_names(LONGEST_STAGE, dataset)
    over = {k: n for k, n in names.items() if len(n) > _limit(*k)}
    assert over, names  # the validate-sweep schedule's name, 83 of 64
    with pytest.raises(StackConfigError, match="shorten the dataset name by"):
        check(stage=LONGEST_STAGE, specs_dir=str(_specs(tmp_path, dataset)))


def test_the_longest_dataset_the_longest_stage_allows_is_accepted(tmp_path: Path) -> None:
    fits = max(
        n
        for n in range(1, 64)
        if all(
            len(name) <= _limit(*k)
            for k, name in dataset_resource_names(LONGEST_STAGE, "d" * n).items()
        )
    )
    cfg = check(stage=LONGEST_STAGE, specs_dir=str(_specs(tmp_path, "d" * fits)))
    assert [s.name for s in cfg.specs] == ["d" * fits]


def test_queue_operators_must_be_role_or_user_arns(tmp_path: Path) -> None:
    sso = "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Ops_*"
    specs = str(_specs(tmp_path, "customers"))
    assert check(stage="prod", specs_dir=specs, queue_operators=(sso,)).queue_operators == (sso,)
    for wrong in ("AWSReservedSSO_Ops", "arn:aws:sts::123456789012:assumed-role/Ops/alice"):
        with pytest.raises(StackConfigError, match="queueOperators"):
            check(stage="prod", specs_dir=specs, queue_operators=(wrong,))
