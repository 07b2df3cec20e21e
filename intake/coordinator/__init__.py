"""The staff surface: triage of sealed submissions. Only deployments with private keys serve it."""
