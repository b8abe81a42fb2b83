"""Model preparation: fetch, verify and convert models; run by `make model`, never by a worker."""
