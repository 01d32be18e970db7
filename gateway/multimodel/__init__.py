"""Multi-model endpoints: many models under one S3 prefix (or local directory) behind one
endpoint, loaded on demand into shared sandboxes (``pool``), placed by ``placement``, read
through ``source``; ``targets`` checks the paths clients name."""
