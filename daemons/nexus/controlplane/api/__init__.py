"""The admin API framework: operations declared once, served, authorised, audited and documented from one table.

``operation.py`` declares what an endpoint is (method, path, IAM action, body and response
schemas, how to locate its target); ``router.py`` turns the table into Starlette routes that
authenticate, validate, authorise through IAM, run the handler and write the admin audit log;
``openapi.py`` renders the same table as the OpenAPI 3.1 document. Handlers never check roles.
"""
