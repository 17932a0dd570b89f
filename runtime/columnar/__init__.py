"""The columnar path: a batch of rows as one array per field, validated by checks compiled from
the input model over whole columns, scored by a columnar predict, written from columns.

Imported by the bulk paths (Spark, files) and by a columnar predict's first call: never when
the function app is indexed (numpy and pyarrow load here).
"""
