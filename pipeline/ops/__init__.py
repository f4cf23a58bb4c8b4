"""Operating the pipeline: configuration, its reference, metrics and health endpoints, logs, redaction."""
