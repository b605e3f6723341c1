"""Control plane (:3001): admin API, IAM, sign-in, vault, analytics, console pages."""
