"""The Logs Insights queries an operator pastes or finds saved in the account.

template.yaml saves each of them (``AWS::Logs::QueryDefinition``, over both
functions' log groups); tests/unit/test_template.py checks that the saved text
is this text, so the console and ``bmsuploader explain`` never drift apart.
Every field they name is one the functions log: ``component``, ``level``,
``source``, ``entry_id``, ``destination`` (the poster), ``outcome``, ``tweet_id``
(:mod:`bmsuploader.aws.observability`, :mod:`bmsuploader.contract.outcomes`).
"""

from __future__ import annotations

#: Placeholders of the saved journey query; ``explain`` fills them in.
SOURCE_PLACEHOLDER = "SOURCE"
ENTRY_PLACEHOLDER = "ENTRY_ID"

_JOURNEY = """\
fields @timestamp, component, level, destination, outcome, tweet_id, message
| filter source = "{source}" and entry_id = "{entry_id}"
| sort @timestamp asc"""

#: Errors of both functions, counted per source and outcome (pick "1 day" as the range).
ERRORS_BY_SOURCE = """\
fields @timestamp, source, outcome, message
| filter level = "ERROR" or outcome = "silent"
| stats count(*) as errors, latest(message) as last_message by source, component, outcome
| sort errors desc"""

#: What went to each network (pick "1 day" as the range); `duplicate` = found already posted.
POSTS = """\
fields @timestamp, destination, source, entry_id, outcome, tweet_id, message
| filter component = "poster" and outcome in ["posted", "duplicate", "dry_run"]
| sort @timestamp desc"""


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def journey(source: str = SOURCE_PLACEHOLDER, entry_id: str = ENTRY_PLACEHOLDER) -> str:
    """Every log line about one entry, fetcher and poster, oldest first."""
    return _JOURNEY.format(source=_quoted(source), entry_id=_quoted(entry_id))
