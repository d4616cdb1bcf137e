"""The networks of the dual-layer model: tensors in, tensors out, no config objects."""
