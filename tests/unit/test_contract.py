"""The contract's shapes are defined once (worker/contract.py): the API's schemas, the
validator and the views agree with it."""

from __future__ import annotations

import pytest

from api import schemas
from worker import contract, validation, views
from worker.errors import ValidationError
from worker.models import DistributionAttempt, DistributionRequest, State, utcnow


def _request() -> DistributionRequest:
    now = utcnow()
    req = DistributionRequest(
        id="a" * 32,
        user_id="b" * 24,
        project_id="c" * 24,
        upload_id="d" * 24,
        priority=0,
        created_by="ci",
        state=State.QUEUED,
        created_at=now,
        updated_at=now,
    )
    req.attempts = [DistributionAttempt(number=1, started_at=now)]
    return req


def test_the_schema_and_the_view_have_the_contracts_fields_in_its_order() -> None:
    assert tuple(schemas.Distribution.model_fields) == contract.DISTRIBUTION_FIELDS
    assert tuple(schemas.Attempt.model_fields) == contract.ATTEMPT_FIELDS
    shown = views.distribution_dict(_request())
    assert tuple(shown) == contract.DISTRIBUTION_FIELDS
    assert tuple(shown["attempts"][0]) == contract.ATTEMPT_FIELDS


@pytest.mark.parametrize("value", [contract.PRIORITY_MIN, contract.PRIORITY_MAX, 0])
def test_the_priority_range_is_the_same_at_every_door(value: int) -> None:
    body = {"userId": "b" * 24, "projectId": "c" * 24, "uploadId": "d" * 24}
    assert schemas.DistributionIn(**body, priority=value).priority == value
    assert validation.priority(value) == value
    for outside in (contract.PRIORITY_MIN - 1, contract.PRIORITY_MAX + 1):
        with pytest.raises(ValueError):
            schemas.DistributionIn(**body, priority=outside)
        with pytest.raises(ValidationError):
            validation.priority(outside)


def test_ids_are_checked_alike() -> None:
    body = {"projectId": "c" * 24, "uploadId": "d" * 24}
    for good in ("0" * 24, "aBcDeF" + "0" * 18):
        assert schemas.DistributionIn(userId=good, **body).userId == good
        assert validation.hex24("userId", good) == good.lower()
    for bad in ("0" * 23, "g" * 24, "0" * 25):
        with pytest.raises(ValueError):
            schemas.DistributionIn(userId=bad, **body)
        with pytest.raises(ValidationError):
            validation.hex24("userId", bad)
