"""The HTTP endpoints ("actions"), one module per job."""
