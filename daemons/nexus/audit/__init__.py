"""The audit pipeline: one traffic event per request, from the emitting daemon to PostgreSQL.

Pure modules (no Trio, no sockets): ``events`` (the record, its wire encoding and
the COPY rows), ``capture`` (what of a body is kept), ``spill`` (the
content-addressed store for large bodies, blocking file I/O) and ``spool`` (the
emitter's append-only disk buffer, blocking file I/O).  Trio shells:
``emitter`` (bounded queue → JetStream, in every emitting daemon), ``writer``
(JetStream → PostgreSQL, in the hub; it also maintains the usage rollups, in
each batch's transaction: there is no separate rollup job) and ``retention``
(partition maintenance, in the hub); ``stream`` holds the one definition of the
``NEXUS_EVENTS`` stream.
"""
