"""The exact response cache: same request, same upstream model, same answer, from Valkey.

``key`` (pure) hashes what decides the answer; ``policy`` (pure) says whether a
request may use the cache and whether an answer may be stored; ``entry``
(pure) is the stored form (canonical answer or recorded stream) and its
binary encoding; ``replay`` turns an entry into the caller's bytes; ``exact``
is the Trio shell over Valkey with single flight within and across processes.
"""
