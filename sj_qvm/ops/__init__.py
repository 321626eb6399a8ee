"""Fast paths, one small package per op, each with its reference twin beside it."""
