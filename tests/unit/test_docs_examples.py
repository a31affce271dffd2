"""Every CarbonTrackedJob example in the README and the docs, judged by the models the CRD is made from."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from carbontrack.api.crd import CarbonTrackedJobSpec
from tests.cases.doc_examples import DocExample, examples

EXAMPLES = examples()


def test_the_docs_have_examples_and_one_marked_invalid() -> None:
    assert len(EXAMPLES) >= 8
    assert any(e.invalid for e in EXAMPLES), "a refused example shows what the apiserver says"
    assert any(e.where.startswith("README.md") for e in EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.where)
def test_example_is_judged_as_it_is_marked(example: DocExample) -> None:
    assert example.body["apiVersion"] == "carbontrack.io/v1alpha1"
    if example.invalid:
        with pytest.raises(ValidationError):
            CarbonTrackedJobSpec.model_validate(example.body["spec"])
    else:
        CarbonTrackedJobSpec.model_validate(example.body["spec"])
