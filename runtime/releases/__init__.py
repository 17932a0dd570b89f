"""Releases: versions of an endpoint's model side by side, chosen per request by a document in
the model store (``document``), which every instance reads again every few seconds
(``follow``) and which ``mlfn release`` changes by conditional writes."""
