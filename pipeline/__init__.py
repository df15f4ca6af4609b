"""The history pipeline: records of storage operations, buffered and written in bulk."""
