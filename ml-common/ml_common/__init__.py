"""What the API and the worker share: settings, schemas, task names and storage layout."""
