"""Prometheus alerting rules for tlsprobe, generated from one template (see `generate`)."""
