"""The Elasticsearch access layer: the only code that builds Elasticsearch requests."""
