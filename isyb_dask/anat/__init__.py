"""Per-subject anatomy: reference, normalisation, surfaces."""
