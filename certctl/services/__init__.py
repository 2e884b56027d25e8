"""Application logic shared by the HTTP API, the scheduler and the fleet simulator.

Each function is a trio-async use case over a ``Store`` and a ``Clock`` (carried by
``Services``): it reads what it needs, asks ``certctl.core`` what to do, and persists the
result with its audit events in one store operation where the store allows. Nothing here
knows about HTTP; the server maps ``ServiceError`` and store errors onto statuses.
"""
