"""IAM for the control plane: policy documents, resource names, and the decision engine.

Layering (imports point down; everything above ``store`` is pure and never imports Trio):

- ``errors``: ``IamError`` and its kinds;
- ``variables``: ``${nexus:...}`` policy variables;
- ``nrn``: resource names and Resource patterns (org scope inheritance);
- ``actions``: action names and patterns, the catalogue of resources and verbs;
- ``conditions``: condition operators and the request context;
- ``document``: policy records, the strict parser, JSON output;
- ``evaluate``: ``AccessRequest`` → ``Decision`` (explicit Deny > Allow > default deny);
- ``simulate``: the decision plus every statement that took part;
- ``seed``: the managed groups and policies, and ``seed_iam`` (sync psycopg, ``nexus db migrate``);
- ``store``: loading a principal's policies through ``PgPool`` (Trio).

Import the submodules directly; this file re-exports nothing so that importing the pure parts
never pulls in the storage shell.
"""
