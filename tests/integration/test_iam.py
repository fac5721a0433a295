"""No permission the code does not use: every statement of the roles is exercised by the suite.

The other direction -- no call the roles would deny -- is checked after every
test (``iam_allows_every_call`` in conftest.py). Together they pin the roles in
template.yaml to what the code calls, as the tests exercise it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import conftest, iam

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def test_every_statement_for_the_code_is_used(request: pytest.FixtureRequest) -> None:
    session = request.session
    ran = {Path(str(item.path)).resolve() for item in session.items}
    if set(HERE.glob("test_*.py")) - ran or conftest._DESELECTED or session.testsfailed:
        pytest.skip("judges the calls of the whole integration suite: run it all, and passing")
    audit = iam.install()
    used = {grant for _, grant in audit.calls if grant is not None}
    unused = [
        f"{grant.statement}: {grant.action}"
        for function in ("FetcherFunction", "PosterFunction")
        for grant in audit.grants(function)
        if grant.statement.split("/")[1] not in conftest.SERVICE_STATEMENTS and grant not in used
    ]
    assert not unused, "template.yaml grants actions no handler called in the whole suite:\n" + "\n".join(
        unused
    )
