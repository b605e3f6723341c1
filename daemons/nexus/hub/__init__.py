"""Nexus hub (:3060): things and shadows, config sync, leased jobs, agent CA, SIEM, the audit writer."""
