"""bmsuploader: announce new BMS 差分 uploads on X.

The pipeline, stage by stage:

* ``src/fetcher`` (Lambda): schedule -> listing -> new entries -> SQS FIFO queue.
* ``src/poster`` (Lambda): queue -> post text -> X.
* this package (``src/shared``, shipped to both as a layer): the message schema,
  source configuration, decoding and parsing, state storage, rendering and the
  publishers.
"""

__version__ = "0.1.0"
USER_AGENT = f"bmsuploader/{__version__} (+https://github.com/bmsuploader/bmsuploader)"
