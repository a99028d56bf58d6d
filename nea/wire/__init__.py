"""The wire protocol: frames as values, and a pure codec between them and bytes."""
