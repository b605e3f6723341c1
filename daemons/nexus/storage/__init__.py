"""Storage access under Trio: PostgreSQL (psycopg adapter and pool), migrations."""
