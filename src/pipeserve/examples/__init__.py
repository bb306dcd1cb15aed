"""Example pipelines built on pipeserve's public API."""
