"""capprof service layer: HTTP API, settings, ORM, Qdrant adapter, importer and CLI."""
