"""``mlfn drift`` (docs/drift.md): the payload log's recent records against a reference set.

``records.py`` finds the record files of a time window (a local folder or ``az://``, pruned by
their ``date=``/``hour=`` folders) and streams their columns; ``stability.py`` bins a reference
column and measures the population stability index; ``report.py`` writes the HTML report.
numpy and pyarrow are imported on first use. Only the command line imports this room.
"""
