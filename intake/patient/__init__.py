"""The public surface: what patients and their people see. It can seal, never open."""
